#include "windows/watermark.h"

#include "base/clock.h"
#include "base/grow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct input {
    int32_t id;
    bool may_idle;
    int64_t watermark;
    int64_t last_active; /* processing time of the last delivery, or of being added */
};

struct ad_watermark {
    struct input *inputs;
    size_t len, cap;
    int64_t empty_since; /* processing time since which there has been no input */
    int64_t hold_until;  /* without inputs, not idle before this processing time */
};

struct ad_watermark *ad_watermark_new(int64_t now)
{
    struct ad_watermark *w = calloc(1, sizeof *w);
    if (w) {
        w->empty_since = now;
        w->hold_until = INT64_MIN;
    }
    return w;
}

void ad_watermark_destroy(struct ad_watermark *w)
{
    if (!w)
        return;
    free(w->inputs);
    free(w);
}

static struct input *find(const struct ad_watermark *w, int32_t id)
{
    for (size_t i = 0; i < w->len; i++)
        if (w->inputs[i].id == id)
            return &w->inputs[i];
    return NULL;
}

int ad_watermark_add_input(struct ad_watermark *w, int32_t id, bool may_idle, int64_t now)
{
    struct input *in = find(w, id);
    if (!in) {
        if (ad_grow(&w->inputs, &w->cap, w->len + 1, sizeof *w->inputs) < 0)
            return -1;
        in = &w->inputs[w->len++];
    }
    *in = (struct input){
        .id = id, .may_idle = may_idle, .watermark = AD_WATERMARK_NONE, .last_active = now};
    return 0;
}

void ad_watermark_remove_input(struct ad_watermark *w, int32_t id)
{
    struct input *in = find(w, id);
    if (!in)
        return;
    /* The newest activity of the last input counts as the start of the empty spell. */
    if (w->len == 1)
        w->empty_since = in->last_active;
    *in = w->inputs[--w->len];
}

size_t ad_watermark_inputs(const struct ad_watermark *w)
{
    return w->len;
}

int64_t ad_watermark_update(struct ad_watermark *w, int32_t id, int64_t t, int64_t now)
{
    struct input *in = find(w, id);
    if (!in)
        return AD_WATERMARK_NONE;
    int64_t before = in->watermark;
    if (t > in->watermark)
        in->watermark = t;
    in->last_active = now;
    return before;
}

int64_t ad_watermark_input(const struct ad_watermark *w, int32_t id)
{
    const struct input *in = find(w, id);
    return in ? in->watermark : AD_WATERMARK_NONE;
}

static bool is_idle(const struct input *in, int64_t now, int64_t idle_timeout)
{
    return in->may_idle && now - in->last_active >= idle_timeout;
}

int64_t ad_watermark_get(const struct ad_watermark *w, int64_t now, int64_t idle_timeout,
                         bool *idle)
{
    int64_t active_min = INT64_MAX, all_max = AD_WATERMARK_NONE;
    bool any_active = false;

    for (size_t i = 0; i < w->len; i++) {
        const struct input *in = &w->inputs[i];
        if (in->watermark > all_max)
            all_max = in->watermark;
        if (is_idle(in, now, idle_timeout))
            continue;
        any_active = true;
        if (in->watermark < active_min)
            active_min = in->watermark;
    }
    if (w->len == 0) {
        if (idle)
            *idle = now - w->empty_since >= idle_timeout && now >= w->hold_until;
        return AD_WATERMARK_NONE;
    }
    if (idle)
        *idle = !any_active;
    return any_active ? active_min : all_max;
}

void ad_watermark_hold(struct ad_watermark *w, int64_t until)
{
    w->hold_until = until;
}

bool ad_watermark_waiting(const struct ad_watermark *w, int64_t now, int64_t idle_timeout)
{
    bool idle;
    return ad_watermark_get(w, now, idle_timeout, &idle) == AD_WATERMARK_NONE && !idle;
}

void ad_watermark_status(const struct ad_watermark *w, int64_t now, int64_t idle_timeout,
                         json_t *out)
{
    char when[40];
    for (size_t i = 0; i < w->len; i++) {
        const struct input *in = &w->inputs[i];
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer(in->id));
        if (in->watermark == AD_WATERMARK_NONE) {
            json_object_set_new(o, "watermark", json_null());
        } else {
            ad_clock_format(in->watermark, when, sizeof when);
            json_object_set_new(o, "watermark", json_string(when));
        }
        json_object_set_new(o, "idle", json_boolean(is_idle(in, now, idle_timeout)));
        json_object_set_new(o, "seconds_since_data",
                            json_real((double)(now - in->last_active) / 1000.0));
        json_array_append_new(out, o);
    }
}
