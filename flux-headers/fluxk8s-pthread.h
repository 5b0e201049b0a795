/* The one <pthread.h> call libfluxk8s makes. The broker cancels a module's thread
 * (pthread_cancel) on `flux module remove --cancel` and when it exits with the module
 * still loaded; the module turns cancellation off while its Rust code runs, so the
 * thread is only ever cancelled while it waits in the reactor. Values as in glibc
 * and musl.
 */
#ifndef FLUXK8S_PTHREAD_H
#define FLUXK8S_PTHREAD_H

#define PTHREAD_CANCEL_ENABLE 0
#define PTHREAD_CANCEL_DISABLE 1
int pthread_setcancelstate (int state, int *oldstate);

#endif /* FLUXK8S_PTHREAD_H */
