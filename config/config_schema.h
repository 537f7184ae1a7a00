#ifndef AD_CONFIG_SCHEMA_H
#define AD_CONFIG_SCHEMA_H

/*
 * The schema of anomalyd's config file: the tables behind struct ad_settings and the checks
 * that tie sections together. Internal to the config module; callers use config.h.
 */

#include "config/schema.h"

extern const struct ad_schema_section ad_config_root_section;

#endif
