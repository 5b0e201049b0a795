//! A fake broker for FFI tests: just enough of libflux (handlers, requests, responses,
//! RPC futures, fd and timer watchers, a reactor, logging, config) to run `mod_main` on
//! a thread and talk to it as the broker would. Linked only into test binaries.

#![allow(
    clippy::missing_safety_doc,
    clippy::undocumented_unsafe_blocks,
    dead_code
)]

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const FLUX_MSGTYPE_REQUEST: c_int = 1;
const FLUX_ROLE_OWNER: u32 = 1;
const FLUX_ROLE_USER: u32 = 2;
const FLUX_RPC_STREAMING: c_int = 2;

type HandlerCb = unsafe extern "C" fn(*mut c_void, *mut c_void, *const c_void, *mut c_void);
type WatcherCb = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int, *mut c_void);
type FutureCb = unsafe extern "C" fn(*mut c_void, *mut c_void);

#[repr(C)]
pub struct FluxMatch {
    typemask: c_int,
    matchtag: u32,
    topic_glob: *const c_char,
}

/// A reply the test scripts for an RPC the module sends.
#[derive(Clone, Debug)]
pub enum Reply {
    Data(String),
    Error(i32, String),
}

/// What a test receives for a request it sent.
pub type Response = Result<String, (i32, String)>;

struct Handler {
    id: usize,
    topic: String,
    cb: HandlerCb,
    arg: usize,
    rolemask: u32,
    started: bool,
}

struct Watcher {
    id: usize,
    /// Called before the reactor waits (a libev prepare watcher), not on a time or fd.
    prepare: bool,
    fd: Option<RawFd>,
    due: f64,
    repeat: f64,
    cb: WatcherCb,
    arg: usize,
    active: bool,
}

struct Future {
    id: usize,
    topic: String,
    payload: String,
    streaming: bool,
    cb: Option<(FutureCb, usize)>,
    queued: VecDeque<Reply>,
    current: Option<Reply>,
    current_c: Option<CString>,
    error_c: Option<CString>,
}

/// One request in flight, as the module sees it (`flux_msg_t *` points here). The
/// reactor holds one reference while the handler runs; `flux_msg_incref` adds more and
/// the last `flux_msg_decref` frees it.
pub struct Msg {
    topic: CString,
    payload: Option<CString>,
    rolemask: u32,
    reply: Option<mpsc::Sender<Response>>,
    /// The client it came from (what `flux_msg_route_first` tells apart).
    sender: u32,
    matchtag: u32,
    streaming: bool,
    refs: AtomicUsize,
}

impl Drop for Msg {
    fn drop(&mut self) {
        LIVE_MSGS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Messages not yet freed: 0 once every reference the module took is dropped.
static LIVE_MSGS: AtomicUsize = AtomicUsize::new(0);

impl Msg {
    fn new(topic: &str, payload: Option<&str>, rolemask: u32) -> Box<Msg> {
        LIVE_MSGS.fetch_add(1, Ordering::SeqCst);
        Box::new(Msg {
            topic: CString::new(topic).unwrap(),
            payload: payload.map(|p| CString::new(p).unwrap()),
            rolemask,
            reply: None,
            sender: 0,
            matchtag: 0,
            streaming: false,
            refs: AtomicUsize::new(1),
        })
    }
}

struct Conf {
    tables: serde_json::Value,
    dumped: HashMap<String, CString>,
}

type Responder = Box<dyn FnMut(&str, &str) -> Vec<Reply> + Send>;

#[derive(Default)]
struct Host {
    rank: u32,
    size: u32,
    name: CString,
    attrs: HashMap<String, CString>,
    conf: Option<Box<Conf>>,
    old_confs: Vec<Conf>,
    handlers: Vec<Handler>,
    watchers: Vec<Watcher>,
    futures: Vec<Future>,
    requests: VecDeque<Box<Msg>>,
    logs: Vec<(i32, String)>,
    next_id: usize,
    stop: bool,
    running: bool,
    epoch: Option<Instant>,
    responder: Option<Responder>,
    rpcs_sent: Vec<(String, String)>,
    wake: Option<(RawFd, RawFd)>,
    /// References the module took on the handle (`flux_incref`) and has not given back.
    handle_refs: usize,
}

fn host() -> MutexGuard<'static, Host> {
    static HOST: OnceLock<Mutex<Host>> = OnceLock::new();
    HOST.get_or_init(|| Mutex::new(Host::default()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Serialises tests: there is one fake broker per process.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static TEST: Mutex<()> = Mutex::new(());
    TEST.lock().unwrap_or_else(|e| e.into_inner())
}

/// The one handle the fake broker hands out.
pub const HANDLE: *mut c_void = 0x1000 as *mut c_void;

/// Resets the fake broker: rank, size, module name and the broker config (JSON of the
/// whole config, e.g. `{"fluxk8s":{...}}`).
pub fn boot(rank: u32, size: u32, name: &str, conf: serde_json::Value) {
    let mut h = host();
    let wake = h.wake.take();
    *h = Host::default();
    h.rank = rank;
    h.size = size;
    h.name = CString::new(name).unwrap();
    h.conf = Some(Box::new(Conf {
        tables: conf,
        dumped: HashMap::new(),
    }));
    h.epoch = Some(Instant::now());
    h.wake = wake.or_else(|| {
        let mut fds = [0; 2];
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        Some((fds[0], fds[1]))
    });
}

pub fn set_attr(name: &str, value: &str) {
    host()
        .attrs
        .insert(name.into(), CString::new(value).unwrap());
}

/// Scripts the replies to RPCs the module sends: `(topic, payload) -> replies`.
pub fn respond_to_rpcs(responder: impl FnMut(&str, &str) -> Vec<Reply> + Send + 'static) {
    host().responder = Some(Box::new(responder));
}

/// Queues more replies on the open RPC to `topic` (a stream the module keeps open).
pub fn push_replies(topic: &str, replies: Vec<Reply>) {
    let mut h = host();
    if let Some(f) = h.futures.iter_mut().find(|f| f.topic == topic) {
        f.queued.extend(replies);
    }
    wake_locked(&h);
}

/// Runs `mod_main` with `args` on a new thread, as the broker does.
pub fn start(args: &[&str]) -> std::thread::JoinHandle<(i32, i32)> {
    let args: Vec<CString> = args.iter().map(|a| CString::new(*a).unwrap()).collect();
    std::thread::spawn(move || {
        let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
        let rc = unsafe { fluxk8s_mod_main(HANDLE, argv.len() as c_int, argv.as_mut_ptr()) };
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        (rc, errno)
    })
}

unsafe extern "C" {
    #[link_name = "mod_main"]
    fn fluxk8s_mod_main(h: *mut c_void, argc: c_int, argv: *mut *mut c_char) -> c_int;
}

/// Waits until the module entered its reactor.
pub fn wait_running() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host().running {
        assert!(
            Instant::now() < deadline,
            "module never entered the reactor"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn enqueue(msg: Box<Msg>) {
    let mut h = host();
    h.requests.push_back(msg);
    wake_locked(&h);
}

/// Sends a request as `owner` or a guest and waits for the response.
pub fn request(topic: &str, payload: Option<&str>, owner: bool) -> Response {
    let (tx, rx) = mpsc::channel();
    let rolemask = if owner {
        FLUX_ROLE_OWNER
    } else {
        FLUX_ROLE_USER
    };
    let mut msg = Msg::new(topic, payload, rolemask);
    msg.reply = Some(tx);
    enqueue(msg);
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no response to {topic}"))
}

/// Sends a request that expects no response (like the broker's `<name>.shutdown`).
pub fn send(topic: &str) {
    enqueue(Msg::new(topic, None, FLUX_ROLE_OWNER));
}

/// Sends a request from client `sender` with `matchtag`, with the streaming flag if
/// `streaming`, as a guest; its responses, however many, come on the receiver.
pub fn stream(
    topic: &str,
    payload: Option<&str>,
    sender: u32,
    matchtag: u32,
    streaming: bool,
) -> mpsc::Receiver<Response> {
    let (tx, rx) = mpsc::channel();
    let mut msg = Msg::new(topic, payload, FLUX_ROLE_USER);
    msg.reply = Some(tx);
    msg.sender = sender;
    msg.matchtag = matchtag;
    msg.streaming = streaming;
    enqueue(msg);
    rx
}

/// A request from client `sender` that expects no response: the broker's
/// `<service>.disconnect` when the client goes away, or a `*-cancel`.
pub fn send_from(topic: &str, payload: Option<&str>, sender: u32) {
    let mut msg = Msg::new(topic, payload, FLUX_ROLE_USER);
    msg.sender = sender;
    enqueue(msg);
}

/// Requests not freed yet: after `mod_main` returns, every reference the module took
/// must have been dropped.
pub fn live_messages() -> usize {
    LIVE_MSGS.load(Ordering::SeqCst)
}

pub fn logs() -> Vec<(i32, String)> {
    host().logs.clone()
}

pub fn rpcs_sent() -> Vec<(String, String)> {
    host().rpcs_sent.clone()
}

/// Handlers, watchers, futures and handle references still alive: all must be gone
/// after `mod_main` returns.
pub fn live_objects() -> (usize, usize, usize, usize) {
    let h = host();
    (
        h.handlers.len(),
        h.watchers.len(),
        h.futures.len(),
        h.handle_refs,
    )
}

fn wake_locked(h: &Host) {
    if let Some((_, w)) = h.wake {
        let byte = 1u8;
        unsafe { libc::write(w, (&raw const byte).cast(), 1) };
    }
}

fn now(h: &Host) -> f64 {
    h.epoch.map_or(0.0, |e| e.elapsed().as_secs_f64())
}

fn cstr(p: *const c_char) -> String {
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn set_errno(e: i32) {
    unsafe { *libc::__errno_location() = e };
}

// ---- the reactor ----

enum Work {
    Request(Box<Msg>, HandlerCb, usize),
    Refuse(Box<Msg>, i32, &'static str),
    Reply(FutureCb, usize, usize),
    Watch(WatcherCb, usize),
}

fn next_work(h: &mut Host) -> Option<Work> {
    if let Some(msg) = h.requests.pop_front() {
        let topic = msg.topic.to_string_lossy().into_owned();
        // Like the broker: the newest handler for a topic wins.
        let handler = h
            .handlers
            .iter()
            .rev()
            .find(|x| x.started && x.topic == topic);
        return Some(match handler {
            None => Work::Refuse(msg, libc::ENOSYS, "no handler"),
            Some(x) if msg.rolemask & (x.rolemask | FLUX_ROLE_OWNER) == 0 => {
                Work::Refuse(msg, libc::EPERM, "Request requires owner credentials")
            }
            Some(x) => Work::Request(msg, x.cb, x.arg),
        });
    }
    for f in h.futures.iter_mut() {
        if let (None, Some((cb, arg))) = (&f.current, f.cb)
            && let Some(reply) = f.queued.pop_front()
        {
            f.current = Some(reply);
            return Some(Work::Reply(cb, f.id, arg));
        }
    }
    let t = now(h);
    for w in h.watchers.iter_mut() {
        if w.active && !w.prepare && w.fd.is_none() && w.due <= t {
            if w.repeat > 0.0 {
                w.due = t + w.repeat;
            } else {
                w.active = false;
            }
            return Some(Work::Watch(w.cb, w.arg));
        }
    }
    None
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_reactor_run(_r: *mut c_void, _flags: c_int) -> c_int {
    host().running = true;
    // Like libev: prepare watchers run once each time there is nothing left to do, and
    // the reactor waits only if they made no new work.
    let mut prepared = false;
    loop {
        let work = {
            let mut h = host();
            if h.stop {
                h.stop = false;
                h.running = false;
                return 0;
            }
            next_work(&mut h)
        };
        match work {
            Some(Work::Request(msg, cb, arg)) => {
                let p: *const Msg = Box::into_raw(msg);
                unsafe { cb(HANDLE, ptr::null_mut(), p.cast(), arg as *mut c_void) };
                flux_msg_decref(p.cast());
            }
            Some(Work::Refuse(msg, errno, text)) => {
                if let Some(tx) = &msg.reply {
                    let _ = tx.send(Err((errno, text.to_owned())));
                }
            }
            Some(Work::Reply(cb, id, arg)) => unsafe { cb(id as *mut c_void, arg as *mut c_void) },
            Some(Work::Watch(cb, arg)) => unsafe {
                cb(ptr::null_mut(), ptr::null_mut(), 1, arg as *mut c_void)
            },
            None if !prepared => {
                prepared = true;
                let ready: Vec<(WatcherCb, usize)> = host()
                    .watchers
                    .iter()
                    .filter(|w| w.active && w.prepare)
                    .map(|w| (w.cb, w.arg))
                    .collect();
                for (cb, arg) in ready {
                    // Each may destroy itself or another: check it still exists.
                    let live = host().watchers.iter().any(|w| w.arg == arg && w.active);
                    if live {
                        unsafe { cb(ptr::null_mut(), ptr::null_mut(), 1, arg as *mut c_void) };
                    }
                }
                continue;
            }
            None => poll_once(),
        }
        prepared = false;
    }
}

fn poll_once() {
    let (mut fds, owners, timeout) = {
        let h = host();
        let mut fds = vec![libc::pollfd {
            fd: h.wake.unwrap().0,
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut owners = vec![None];
        for w in h.watchers.iter().filter(|w| w.active) {
            if let Some(fd) = w.fd {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                owners.push(Some((w.cb, w.arg)));
            }
        }
        let t = now(&h);
        let next_timer = h
            .watchers
            .iter()
            .filter(|w| w.active && !w.prepare && w.fd.is_none())
            .map(|w| ((w.due - t).max(0.0) * 1000.0) as i32)
            .min();
        (fds, owners, next_timer.unwrap_or(100).min(100))
    };
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    for (pfd, owner) in fds.iter().zip(owners) {
        if pfd.revents == 0 {
            continue;
        }
        match owner {
            None => {
                let mut buf = [0u8; 64];
                while unsafe { libc::read(pfd.fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
            }
            Some((cb, arg)) => unsafe {
                cb(ptr::null_mut(), ptr::null_mut(), 1, arg as *mut c_void)
            },
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_reactor_stop(_r: *mut c_void) {
    host().stop = true;
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_reactor_stop_error(_r: *mut c_void) {
    host().stop = true;
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_reactor_now(_r: *mut c_void) -> f64 {
    now(&host())
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_reactor_now_update(_r: *mut c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn flux_get_reactor(_h: *mut c_void) -> *mut c_void {
    0x2000 as *mut c_void
}

// ---- watchers ----

fn add_watcher(
    prepare: bool,
    fd: Option<RawFd>,
    after: f64,
    repeat: f64,
    cb: Option<WatcherCb>,
    arg: *mut c_void,
) -> *mut c_void {
    let mut h = host();
    h.next_id += 1;
    let id = h.next_id;
    let due = now(&h) + after;
    h.watchers.push(Watcher {
        id,
        prepare,
        fd,
        due,
        repeat,
        cb: cb.unwrap(),
        arg: arg as usize,
        active: false,
    });
    id as *mut c_void
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_fd_watcher_create(
    _r: *mut c_void,
    fd: c_int,
    _events: c_int,
    cb: Option<WatcherCb>,
    arg: *mut c_void,
) -> *mut c_void {
    add_watcher(false, Some(fd), 0.0, 0.0, cb, arg)
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_timer_watcher_create(
    _r: *mut c_void,
    after: f64,
    repeat: f64,
    cb: Option<WatcherCb>,
    arg: *mut c_void,
) -> *mut c_void {
    add_watcher(false, None, after, repeat, cb, arg)
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_prepare_watcher_create(
    _r: *mut c_void,
    cb: Option<WatcherCb>,
    arg: *mut c_void,
) -> *mut c_void {
    add_watcher(true, None, 0.0, 0.0, cb, arg)
}

fn with_watcher(w: *mut c_void, f: impl FnOnce(&mut Watcher, f64)) {
    let mut h = host();
    let t = now(&h);
    if let Some(x) = h.watchers.iter_mut().find(|x| x.id == w as usize) {
        f(x, t);
    }
    wake_locked(&h);
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_timer_watcher_reset(w: *mut c_void, after: f64, repeat: f64) {
    with_watcher(w, |x, t| {
        x.due = t + after;
        x.repeat = repeat;
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_watcher_start(w: *mut c_void) {
    with_watcher(w, |x, _| x.active = true);
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_watcher_stop(w: *mut c_void) {
    with_watcher(w, |x, _| x.active = false);
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_watcher_destroy(w: *mut c_void) {
    host().watchers.retain(|x| x.id != w as usize);
}

// ---- message handlers, requests, responses ----

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_handler_create(
    _h: *mut c_void,
    m: FluxMatch,
    cb: Option<HandlerCb>,
    arg: *mut c_void,
) -> *mut c_void {
    assert_eq!(
        m.typemask, FLUX_MSGTYPE_REQUEST,
        "the module only handles requests"
    );
    let mut h = host();
    h.next_id += 1;
    let id = h.next_id;
    let topic = cstr(m.topic_glob);
    h.handlers.push(Handler {
        id,
        topic,
        cb: cb.unwrap(),
        arg: arg as usize,
        rolemask: 0,
        started: false,
    });
    id as *mut c_void
}

fn with_handler(mh: *mut c_void, f: impl FnOnce(&mut Handler)) {
    if let Some(x) = host().handlers.iter_mut().find(|x| x.id == mh as usize) {
        f(x);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_handler_start(mh: *mut c_void) {
    with_handler(mh, |x| x.started = true);
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_handler_stop(mh: *mut c_void) {
    with_handler(mh, |x| x.started = false);
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_handler_allow_rolemask(mh: *mut c_void, rolemask: u32) {
    with_handler(mh, |x| x.rolemask |= rolemask);
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_handler_destroy(mh: *mut c_void) {
    host().handlers.retain(|x| x.id != mh as usize);
}

fn msg<'a>(m: *const c_void) -> &'a Msg {
    unsafe { &*(m as *const Msg) }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_get_topic(m: *const c_void, topic: *mut *const c_char) -> c_int {
    unsafe { *topic = msg(m).topic.as_ptr() };
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_get_rolemask(m: *const c_void, rolemask: *mut u32) -> c_int {
    unsafe { *rolemask = msg(m).rolemask };
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_incref(m: *const c_void) -> *const c_void {
    msg(m).refs.fetch_add(1, Ordering::SeqCst);
    m
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_decref(m: *const c_void) {
    if msg(m).refs.fetch_sub(1, Ordering::SeqCst) == 1 {
        drop(unsafe { Box::from_raw(m as *mut Msg) });
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_is_streaming(m: *const c_void) -> bool {
    msg(m).streaming
}

/// Same client; the fake's clients all may speak for themselves.
#[unsafe(no_mangle)]
pub extern "C" fn flux_disconnect_match(m1: *const c_void, m2: *const c_void) -> bool {
    msg(m1).sender == msg(m2).sender
}

/// Same client, and `m1`'s payload names `m2`'s matchtag.
#[unsafe(no_mangle)]
pub extern "C" fn flux_cancel_match(m1: *const c_void, m2: *const c_void) -> bool {
    let named = msg(m1)
        .payload
        .as_ref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p.to_str().ok()?).ok())
        .and_then(|v| v["matchtag"].as_u64());
    flux_disconnect_match(m1, m2) && named == Some(u64::from(msg(m2).matchtag))
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_msg_get_userid(_m: *const c_void, userid: *mut u32) -> c_int {
    unsafe { *userid = 0 };
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_request_decode(
    m: *const c_void,
    topic: *mut *const c_char,
    s: *mut *const c_char,
) -> c_int {
    let m = msg(m);
    unsafe {
        if !topic.is_null() {
            *topic = m.topic.as_ptr();
        }
        if !s.is_null() {
            *s = m.payload.as_ref().map_or(ptr::null(), |p| p.as_ptr());
        }
    }
    0
}

fn send_response(m: *const c_void, response: Response) -> c_int {
    match &msg(m).reply {
        Some(tx) => {
            let _ = tx.send(response);
            0
        }
        None => {
            set_errno(libc::EPROTO);
            -1
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_respond(_h: *mut c_void, m: *const c_void, s: *const c_char) -> c_int {
    send_response(m, Ok(if s.is_null() { String::new() } else { cstr(s) }))
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_respond_error(
    _h: *mut c_void,
    m: *const c_void,
    errnum: c_int,
    s: *const c_char,
) -> c_int {
    send_response(
        m,
        Err((errnum, if s.is_null() { String::new() } else { cstr(s) })),
    )
}

// ---- RPC futures ----

#[unsafe(no_mangle)]
pub extern "C" fn flux_rpc(
    _h: *mut c_void,
    topic: *const c_char,
    s: *const c_char,
    _nodeid: u32,
    flags: c_int,
) -> *mut c_void {
    let topic = cstr(topic);
    let payload = if s.is_null() { String::new() } else { cstr(s) };
    let mut h = host();
    h.rpcs_sent.push((topic.clone(), payload.clone()));
    let replies = match h.responder.as_mut() {
        Some(r) => r(&topic, &payload),
        None => vec![Reply::Error(libc::ENOSYS, format!("no service {topic}"))],
    };
    h.next_id += 1;
    let id = h.next_id;
    h.futures.push(Future {
        id,
        topic,
        payload,
        streaming: flags & FLUX_RPC_STREAMING != 0,
        cb: None,
        queued: replies.into(),
        current: None,
        current_c: None,
        error_c: None,
    });
    id as *mut c_void
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_future_then(
    f: *mut c_void,
    _timeout: f64,
    cb: Option<FutureCb>,
    arg: *mut c_void,
) -> c_int {
    let mut h = host();
    if let Some(x) = h.futures.iter_mut().find(|x| x.id == f as usize) {
        x.cb = Some((cb.unwrap(), arg as usize));
    }
    wake_locked(&h);
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_rpc_get(f: *mut c_void, s: *mut *const c_char) -> c_int {
    let mut h = host();
    let Some(x) = h.futures.iter_mut().find(|x| x.id == f as usize) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    match x.current.clone() {
        Some(Reply::Data(d)) => {
            x.current_c = Some(CString::new(d).unwrap());
            if !s.is_null() {
                unsafe { *s = x.current_c.as_ref().unwrap().as_ptr() };
            }
            0
        }
        Some(Reply::Error(errno, text)) => {
            x.error_c = Some(CString::new(text).unwrap());
            set_errno(errno);
            -1
        }
        None => {
            set_errno(libc::EAGAIN);
            -1
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_future_error_string(f: *mut c_void) -> *const c_char {
    let h = host();
    h.futures
        .iter()
        .find(|x| x.id == f as usize)
        .and_then(|x| x.error_c.as_ref())
        .map_or(ptr::null(), |c| c.as_ptr())
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_future_reset(f: *mut c_void) {
    let mut h = host();
    if let Some(x) = h.futures.iter_mut().find(|x| x.id == f as usize) {
        x.current = None;
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_future_destroy(f: *mut c_void) {
    host().futures.retain(|x| x.id != f as usize);
}

// ---- attributes, config, module ----

#[unsafe(no_mangle)]
pub extern "C" fn flux_get_rank(_h: *mut c_void, rank: *mut u32) -> c_int {
    unsafe { *rank = host().rank };
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_get_size(_h: *mut c_void, size: *mut u32) -> c_int {
    unsafe { *size = host().size };
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_attr_get(_h: *mut c_void, name: *const c_char) -> *const c_char {
    let h = host();
    match h.attrs.get(&cstr(name)) {
        Some(v) => v.as_ptr(),
        None => {
            set_errno(libc::ENOENT);
            ptr::null()
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_aux_get(_h: *mut c_void, name: *const c_char) -> *mut c_void {
    if cstr(name) == "flux::name" {
        host().name.as_ptr().cast_mut().cast()
    } else {
        ptr::null_mut()
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_incref(h: *mut c_void) -> *mut c_void {
    host().handle_refs += 1;
    h
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_decref(_h: *mut c_void) {
    let mut h = host();
    h.handle_refs = h
        .handle_refs
        .checked_sub(1)
        .expect("flux_decref without a reference taken");
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_get_conf(_h: *mut c_void) -> *const c_void {
    host()
        .conf
        .as_deref()
        .map_or(ptr::null(), |c| (c as *const Conf).cast())
}

/// The config's `[key]` table as a `json_t *` (here: a pointer to its JSON text).
#[unsafe(no_mangle)]
pub extern "C" fn fakehost_conf_table(conf: *const c_void, key: *const c_char) -> *const c_void {
    let conf = unsafe { &mut *(conf as *mut Conf) };
    let key = cstr(key);
    let Some(table) = conf.tables.get(&key) else {
        return ptr::null();
    };
    let text = CString::new(table.to_string()).unwrap();
    conf.dumped
        .entry(key)
        .insert_entry(text)
        .get()
        .as_ptr()
        .cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn json_dumps(json: *const c_void, _flags: usize) -> *mut c_char {
    unsafe { libc::strdup(json.cast()) }
}

#[unsafe(no_mangle)]
pub extern "C" fn fakehost_log(_h: *mut c_void, level: c_int, text: *const c_char) {
    host().logs.push((level, cstr(text)));
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_module_config_request_decode(
    m: *const c_void,
    conf: *mut *mut c_void,
) -> c_int {
    let payload = msg(m)
        .payload
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    match payload
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        Some(Ok(tables)) => {
            let boxed = Box::new(Conf {
                tables,
                dumped: HashMap::new(),
            });
            unsafe { *conf = Box::into_raw(boxed).cast() };
            0
        }
        _ => {
            set_errno(libc::EPROTO);
            -1
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_set_conf_new(_h: *mut c_void, conf: *const c_void) -> c_int {
    let conf = unsafe { Box::from_raw(conf as *mut Conf) };
    let mut h = host();
    if let Some(old) = h.conf.replace(conf) {
        // Kept: the module may still hold a table pointer from the old config.
        h.old_confs.push(*old);
    }
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_conf_decref(conf: *const c_void) {
    drop(unsafe { Box::from_raw(conf as *mut Conf) });
}

#[unsafe(no_mangle)]
pub extern "C" fn flux_module_set_running(_h: *mut c_void) -> c_int {
    host().running = true;
    0
}

#[link(name = "fakeflux", kind = "static")]
unsafe extern "C" {
    fn flux_log(h: *mut c_void, level: c_int, fmt: *const c_char, ...) -> c_int;
}

/// Keeps the C half linked even if nothing in the test calls it directly.
pub fn log_through_c(text: &str) {
    let text = CString::new(text).unwrap();
    unsafe { flux_log(HANDLE, 6, c"%s".as_ptr(), text.as_ptr()) };
}

/// What the FFI tests feed the module: `resource.journal` responses captured from
/// flux-core 0.88, and arguments that keep Kubernetes out of reach.
pub mod captured {
    // With 10 configured hosts flux-sample-[0-9].
    pub const RESTART: &str = r#"{"events":[{"timestamp":1795393304.173115,"name":"restart","context":{"ranks":"0-9","online":"","nodelist":"flux-sample-[0-9]"}}]}"#;
    pub const DEFINE: &str = r#"{"events":[{"timestamp":1795393304.1731536,"name":"resource-define","context":{"method":"configuration"}}],"R":{"version":1,"execution":{"R_lite":[{"rank":"0-9","children":{"core":"0-1"}}],"starttime":0.0,"expiration":0.0,"nodelist":["flux-sample-[0-9]"]}}}"#;
    pub const BACKLOG_END: &str = r#"{"events":[]}"#;
    pub const ONLINE: &str = r#"{"events":[{"timestamp":1795393304.6674626,"name":"online","context":{"idset":"1-3"}}]}"#;
    pub const DRAIN: &str = r#"{"events":[{"timestamp":1795393306.5007591,"name":"drain","context":{"idset":"2","nodelist":"flux-sample-2","reason":"scenario drain","overwrite":0}}]}"#;

    /// Module arguments that keep Kubernetes out of reach whatever the environment holds.
    pub const NO_KUBE: &str = "kubeconfig=/nonexistent/fluxk8s-test-kubeconfig";
}
