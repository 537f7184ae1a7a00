# Runs at install time (install(SCRIPT) in cmake/install.cmake), when CMAKE_INSTALL_PREFIX is
# the one installed to: the systemd unit names the binary and the config where they are, the
# config goes to /etc for the /usr prefix (as GNUInstallDirs has it) and never over an edited
# one. systemd's own folders are lib/, whatever the architecture's libdir.
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(etc "/etc")
else()
  set(etc "${prefix}/etc")
endif()

file(READ "${AD_SOURCE_DIR}/systemd/anomalyd.service" unit)
string(REPLACE "/usr/bin/anomalyd" "${prefix}/bin/anomalyd" unit "${unit}")
string(REPLACE "/etc/anomalyd/" "${etc}/anomalyd/" unit "${unit}")
string(REPLACE "/usr/share/doc/anomalyd/" "${prefix}/share/doc/anomalyd/" unit "${unit}")
file(READ "${AD_SOURCE_DIR}/systemd/anomalyd.tmpfiles" tmpfiles)
string(REPLACE "/etc/anomalyd/" "${etc}/anomalyd/" tmpfiles "${tmpfiles}")
file(MAKE_DIRECTORY "${AD_STAGING_DIR}")
file(WRITE "${AD_STAGING_DIR}/anomalyd.service" "${unit}")
file(WRITE "${AD_STAGING_DIR}/anomalyd.conf" "${tmpfiles}")

file(INSTALL DESTINATION "${prefix}/lib/systemd/system" TYPE FILE
     FILES "${AD_STAGING_DIR}/anomalyd.service")
file(INSTALL DESTINATION "${prefix}/lib/tmpfiles.d" TYPE FILE
     FILES "${AD_STAGING_DIR}/anomalyd.conf")
file(INSTALL DESTINATION "${prefix}/lib/sysusers.d" TYPE FILE
     RENAME anomalyd.conf FILES "${AD_SOURCE_DIR}/systemd/anomalyd.sysusers")

if(EXISTS "$ENV{DESTDIR}${etc}/anomalyd/anomalyd.yaml")
  message(STATUS "Keeping: $ENV{DESTDIR}${etc}/anomalyd/anomalyd.yaml (already there)")
else()
  file(INSTALL DESTINATION "${etc}/anomalyd" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ
       FILES "${AD_SOURCE_DIR}/config/anomalyd.yaml")
endif()
