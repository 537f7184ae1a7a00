# What `cmake --install` puts where (docs/deployment-systemd.md), and the .deb CPack makes of
# it (`cpack -G DEB` in the build folder). Configure with -DCMAKE_INSTALL_PREFIX=/usr for a
# system install; `cmake --install build --prefix /usr` works too, since the paths that depend
# on the prefix are computed when installing (cmake/install-system.cmake).
include(GNUInstallDirs)

install(TARGETS anomalyd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The unit, sysusers.d and tmpfiles.d entries and the default config.
install(CODE "set(AD_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
set(AD_STAGING_DIR \"${PROJECT_BINARY_DIR}/install-staging\")")
install(SCRIPT cmake/install-system.cmake)
# Documentation and examples: the unit's Documentation= points here.
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR} FILES_MATCHING PATTERN "*.md")
install(DIRECTORY config/examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples
        FILES_MATCHING PATTERN "*.yaml")
# The reference trainer (docs/training.md), for a timer or cron job on the same host.
install(PROGRAMS train/anomalyd_train.py DESTINATION ${CMAKE_INSTALL_DATADIR}/anomalyd/train)
install(FILES train/safetensors_io.py train/feedback_marks.py
        DESTINATION ${CMAKE_INSTALL_DATADIR}/anomalyd/train)

# ---- the .deb ----
# Its dependencies are the packages the container's runtime stage installs: one list, checked
# against the binary's shared libraries by tests/integration/test_container_build.sh.
file(STRINGS packaging/runtime-packages.txt ad_runtime_packages REGEX "^[a-z0-9]")
if(ANOMALYD_HAVE_CUDA)
  # NVIDIA's Debian packages are named after the toolkit's major and minor version.
  string(REGEX MATCH "^([0-9]+)\\.([0-9]+)" _ "${CUDAToolkit_VERSION}")
  file(STRINGS packaging/runtime-packages-cuda.txt ad_cuda_packages REGEX "^[a-z0-9]")
  string(REPLACE "@CUDA@" "${CMAKE_MATCH_1}-${CMAKE_MATCH_2}" ad_cuda_packages
         "${ad_cuda_packages}")
  list(APPEND ad_runtime_packages ${ad_cuda_packages})
endif()
list(JOIN ad_runtime_packages ", " CPACK_DEBIAN_PACKAGE_DEPENDS)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME anomalyd)
set(CPACK_PACKAGE_VENDOR "anomalyd")
set(CPACK_PACKAGE_CONTACT "anomalyd maintainers <anomalyd@example.com>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_DESCRIPTION
    "Scores Kafka logs and Prometheus metrics with an LSTM (CUDA or CPU) and publishes alerts to Kafka and Redis.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3-torch, python3-numpy")
# Installed with DESTDIR under the prefix the package has, so /etc stays /etc.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Debug information stays in the build; the package ships what runs.
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/deb/conffiles ${PROJECT_SOURCE_DIR}/packaging/deb/postinst
    ${PROJECT_SOURCE_DIR}/packaging/deb/prerm ${PROJECT_SOURCE_DIR}/packaging/deb/postrm)
include(CPack)
