#ifndef AD_EXPR_H
#define AD_EXPR_H

/*
 * The small expression language of extraction rules:
 *
 *   feature:    count | count_if PREDICATE | sum PATH | mean PATH | min PATH | max PATH
 *               | last PATH
 *   predicate:  PATH OP LITERAL | PATH exists
 *   OP:         == != < <= > >=        (< <= > >= need a number)
 *   LITERAL:    "text" | 'text' | number | true | false | null | bare-word (a string)
 *
 * PATH is a JSON path as jpath.h defines it. On error the functions return -1, set *error to
 * a static description and *offset to the byte offset of the problem in text.
 */

#include <stddef.h>

#include "config/settings.h"

/* Fills kind, path and predicate of out (not name or query). */
int ad_expr_parse_feature(const char *text, struct ad_settings_feature *out, const char **error,
                          size_t *offset);
int ad_expr_parse_predicate(const char *text, struct ad_predicate *out, const char **error,
                            size_t *offset);

void ad_expr_free_predicate(struct ad_predicate *p);
void ad_expr_free_feature(struct ad_settings_feature *f);

#endif
