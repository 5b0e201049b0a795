/* The subset of the libflux-core (v0.88) API that libfluxk8s calls.
 *
 * Declared here by us from the documented interface, so the module builds without
 * flux-core installed. The broker process provides every symbol at load time: the
 * module never links libflux-core. Keep each prototype identical to <flux/core.h>.
 */
#ifndef FLUXK8S_FLUX_H
#define FLUXK8S_FLUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* types.h */
typedef struct flux_handle flux_t;
typedef struct flux_msg flux_msg_t;
typedef struct flux_reactor flux_reactor_t;
typedef struct flux_watcher flux_watcher_t;
typedef struct flux_msg_handler flux_msg_handler_t;
typedef struct flux_future flux_future_t;
typedef struct flux_conf flux_conf_t;
typedef struct {
    char text[160];
} flux_error_t;
typedef void (*flux_free_f) (void *arg);

/* message.h */
#define FLUX_MSGTYPE_REQUEST 0x01
#define FLUX_MSGTYPE_RESPONSE 0x02
#define FLUX_MSGTYPE_EVENT 0x04
#define FLUX_MSGTYPE_CONTROL 0x08
#define FLUX_MSGTYPE_ANY 0x0f
#define FLUX_MATCHTAG_NONE 0
#define FLUX_NODEID_ANY 0xFFFFFFFF
#define FLUX_NODEID_UPSTREAM 0xFFFFFFFE
#define FLUX_ROLE_NONE 0
#define FLUX_ROLE_OWNER 1
#define FLUX_ROLE_USER 2
#define FLUX_ROLE_ALL 0xFFFFFFFF

struct flux_match {
    int typemask;
    uint32_t matchtag;
    const char *topic_glob;
};

int flux_msg_get_topic (const flux_msg_t *msg, const char **topic);
int flux_msg_get_userid (const flux_msg_t *msg, uint32_t *userid);
int flux_msg_get_rolemask (const flux_msg_t *msg, uint32_t *rolemask);
const flux_msg_t *flux_msg_incref (const flux_msg_t *msg);
void flux_msg_decref (const flux_msg_t *msg);
bool flux_msg_is_streaming (const flux_msg_t *msg);

/* disconnect.h: msg1 is the disconnect (or cancel) request, msg2 a request held */
bool flux_disconnect_match (const flux_msg_t *msg1, const flux_msg_t *msg2);
bool flux_cancel_match (const flux_msg_t *msg1, const flux_msg_t *msg2);

/* handle.h */
#define FLUX_POLLIN 1
#define FLUX_POLLOUT 2
#define FLUX_POLLERR 4

flux_reactor_t *flux_get_reactor (flux_t *h);
const flux_conf_t *flux_get_conf (flux_t *h);
int flux_set_conf_new (flux_t *h, const flux_conf_t *conf);
void *flux_aux_get (flux_t *h, const char *name);
flux_t *flux_incref (flux_t *h);
void flux_decref (flux_t *h);

/* reactor.h */
int flux_reactor_run (flux_reactor_t *r, int flags);
void flux_reactor_stop (flux_reactor_t *r);
void flux_reactor_stop_error (flux_reactor_t *r);
double flux_reactor_now (flux_reactor_t *r);
void flux_reactor_now_update (flux_reactor_t *r);

/* watcher.h */
typedef void (*flux_watcher_f) (flux_reactor_t *r, flux_watcher_t *w, int revents, void *arg);
flux_watcher_t *flux_fd_watcher_create (flux_reactor_t *r,
                                        int fd,
                                        int events,
                                        flux_watcher_f cb,
                                        void *arg);
flux_watcher_t *flux_timer_watcher_create (flux_reactor_t *r,
                                           double after,
                                           double repeat,
                                           flux_watcher_f cb,
                                           void *arg);
void flux_timer_watcher_reset (flux_watcher_t *w, double after, double repeat);
flux_watcher_t *flux_prepare_watcher_create (flux_reactor_t *r,
                                             flux_watcher_f cb,
                                             void *arg);
void flux_watcher_start (flux_watcher_t *w);
void flux_watcher_stop (flux_watcher_t *w);
void flux_watcher_destroy (flux_watcher_t *w);

/* msg_handler.h */
typedef void (*flux_msg_handler_f) (flux_t *h,
                                    flux_msg_handler_t *mh,
                                    const flux_msg_t *msg,
                                    void *arg);
flux_msg_handler_t *flux_msg_handler_create (flux_t *h,
                                             const struct flux_match match,
                                             flux_msg_handler_f cb,
                                             void *arg);
void flux_msg_handler_destroy (flux_msg_handler_t *mh);
void flux_msg_handler_start (flux_msg_handler_t *mh);
void flux_msg_handler_stop (flux_msg_handler_t *mh);
void flux_msg_handler_allow_rolemask (flux_msg_handler_t *mh, uint32_t rolemask);

/* rpc.h, future.h */
#define FLUX_RPC_NORESPONSE 1
#define FLUX_RPC_STREAMING 2
typedef void (*flux_continuation_f) (flux_future_t *f, void *arg);
flux_future_t *flux_rpc (flux_t *h, const char *topic, const char *s, uint32_t nodeid, int flags);
int flux_rpc_get (flux_future_t *f, const char **s);
int flux_future_then (flux_future_t *f, double timeout, flux_continuation_f cb, void *arg);
void flux_future_reset (flux_future_t *f);
void flux_future_destroy (flux_future_t *f);
const char *flux_future_error_string (flux_future_t *f);

/* request.h, response.h */
int flux_request_decode (const flux_msg_t *msg, const char **topic, const char **s);
int flux_respond (flux_t *h, const flux_msg_t *request, const char *s);
int flux_respond_error (flux_t *h, const flux_msg_t *request, int errnum, const char *errstr);

/* flog.h: level is a syslog LOG_* priority */
#define LOG_EMERG 0
#define LOG_ALERT 1
#define LOG_CRIT 2
#define LOG_ERR 3
#define LOG_WARNING 4
#define LOG_NOTICE 5
#define LOG_INFO 6
#define LOG_DEBUG 7
int flux_log (flux_t *h, int level, const char *fmt, ...);

/* attr.h */
int flux_get_rank (flux_t *h, uint32_t *rank);
int flux_get_size (flux_t *h, uint32_t *size);
const char *flux_attr_get (flux_t *h, const char *name);

/* conf.h: fmt is a jansson unpack format */
int flux_conf_unpack (const flux_conf_t *conf, flux_error_t *error, const char *fmt, ...);
void flux_conf_decref (const flux_conf_t *conf);

/* module.h */
int flux_module_set_running (flux_t *h);
int flux_module_config_request_decode (const flux_msg_t *msg, flux_conf_t **conf);

#endif /* FLUXK8S_FLUX_H */
