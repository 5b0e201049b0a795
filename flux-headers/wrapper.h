/* bindgen input: everything libfluxk8s declares about its host. */
#include "fluxk8s-flux.h"
#include "fluxk8s-jansson.h"
#include "fluxk8s-pthread.h"
