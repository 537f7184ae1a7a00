#ifndef AD_COMPONENT_H
#define AD_COMPONENT_H

/*
 * The interface through which the process (daemon/) drives the parts it is built from without
 * knowing any of them by name: the data path of detect/, the scorer of gpu/. It lives on the
 * ground floor so that a part can offer itself without including the layer that drives it.
 */

#include <stddef.h>

#include <jansson.h>

struct ad_config;

/* A request to the admin endpoint on one of the paths it hands to components
 * (/metrics/entities, /alerts/<id>/feedback). Borrowed for the call. */
struct ad_component_request {
    const char *method; /* "GET", "HEAD", "POST" */
    const char *path;   /* without the query */
    const char *body;   /* NUL-terminated; "" when none */
    size_t body_len;
    const char *by; /* who asked, for records: "admin 127.0.0.1" */
};

/* The answer: status, content type (static), body (malloc'd; the endpoint frees it). */
struct ad_component_reply {
    int status;
    const char *content_type;
    char *body;
    size_t body_len;
};

/* Called by a component when its stop has finished. */
typedef void (*ad_component_done_fn)(void *done_arg);

/*
 * A part of the pipeline that the daemon drives. Every callback runs on the loop thread and
 * may be NULL.
 */
struct ad_component {
    const char *name;
    void *ctx;
    /* Switches to next. Returns 0, or -1 with errstr filled and nothing changed. */
    int (*apply)(void *ctx, const struct ad_config *next, char *errstr, size_t errstr_size);
    /* Starts an orderly stop and calls done(done_arg) once finished, possibly before
     * returning. */
    void (*stop)(void *ctx, ad_component_done_fn done, void *done_arg);
    /* Adds this component's part to /status. */
    void (*status)(void *ctx, json_t *out);
    /* Answers a request on a path the admin endpoint hands to components; returns 0 when it
     * did (out filled), -1 when the path is not this component's. */
    int (*serve)(void *ctx, const struct ad_component_request *req, struct ad_component_reply *out);
};

#endif
