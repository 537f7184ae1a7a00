#ifndef AD_TEMPLATE_H
#define AD_TEMPLATE_H

/*
 * The one template language of the config (sinks.alertmanager.generator_url): text with
 * placeholders `{{name}}` (spaces inside the braces allowed), each replaced by a value that is
 * percent-encoded for a URL (every byte but A-Z a-z 0-9 - . _ ~), so that a label value can
 * never break the URL it is put into. `{{` always opens a placeholder; there is nothing else:
 * no conditions, no loops, no filters. Which names exist is the caller's business.
 */

#include <stddef.h>

struct ad_template;

/* NULL with errstr filled and *offset (may be NULL) at the problem: a `{{` without `}}`, or a
 * name that is empty or holds other than letters, digits, '_' and '.'. */
struct ad_template *ad_template_parse(const char *text, size_t *offset, char *errstr,
                                      size_t errstr_size);
void ad_template_free(struct ad_template *t); /* accepts NULL */

/* The placeholders' names in order (borrowed), and how many. */
size_t ad_template_names(const struct ad_template *t, const char *const **names);

/* The text with each placeholder replaced by lookup(arg, name), percent-encoded (NULL: empty).
 * Returns a string the caller frees, or NULL when out of memory. */
char *ad_template_expand(const struct ad_template *t,
                         const char *(*lookup)(void *arg, const char *name), void *arg);

#endif
