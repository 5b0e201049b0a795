/* The two variadic libflux calls of the fake broker (stable Rust cannot define a
 * variadic function). They format or unpack, then hand over to the Rust fake host. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct flux_handle flux_t;
typedef struct flux_conf flux_conf_t;
typedef struct json_t json_t;
typedef struct {
    char text[160];
} flux_error_t;

void fakehost_log (flux_t *h, int level, const char *text);
json_t *fakehost_conf_table (const flux_conf_t *conf, const char *key);

int flux_log (flux_t *h, int level, const char *fmt, ...)
{
    char text[4096];
    va_list ap;

    va_start (ap, fmt);
    vsnprintf (text, sizeof (text), fmt, ap);
    va_end (ap);
    fakehost_log (h, level, text);
    return 0;
}

/* Only the one format the module uses: "{s?o}", a key and a json_t ** out-pointer. */
int flux_conf_unpack (const flux_conf_t *conf, flux_error_t *error, const char *fmt, ...)
{
    va_list ap;
    const char *key;
    json_t **out;

    if (strcmp (fmt, "{s?o}") != 0) {
        if (error)
            snprintf (error->text, sizeof (error->text), "fake host: format %s", fmt);
        errno = EINVAL;
        return -1;
    }
    va_start (ap, fmt);
    key = va_arg (ap, const char *);
    out = va_arg (ap, json_t **);
    va_end (ap);
    json_t *table = fakehost_conf_table (conf, key);
    if (table)
        *out = table;
    return 0;
}
