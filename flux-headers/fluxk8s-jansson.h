/* The one jansson call libfluxk8s makes: serialising the [fluxk8s] config table that
 * flux_conf_unpack() hands back as a json_t. libjansson is already loaded in the broker
 * (libflux-core depends on it), so the symbol resolves there, like the flux_* ones.
 */
#ifndef FLUXK8S_JANSSON_H
#define FLUXK8S_JANSSON_H

#include <stddef.h>

typedef struct json_t json_t;
#define JSON_COMPACT 0x20
#define JSON_ENCODE_ANY 0x200
char *json_dumps (const json_t *json, size_t flags);

#endif /* FLUXK8S_JANSSON_H */
