//! Generates raw bindings from our own declarations in `flux-headers/`.
//!
//! Nothing is linked: the broker that dlopens `libfluxk8s.so` already provides every
//! `flux_*` and `json_*` symbol, so the library keeps them undefined.

use std::env;
use std::path::PathBuf;

use bindgen::callbacks::{IntKind, ParseCallbacks};

const HEADERS: &[&str] = &[
    "flux-headers/wrapper.h",
    "flux-headers/fluxk8s-flux.h",
    "flux-headers/fluxk8s-jansson.h",
    "flux-headers/fluxk8s-pthread.h",
];

/// The bindings, committed: a machine without libclang (bindgen needs it) builds with them
/// as they are; one with libclang checks them against what bindgen makes now.
const COMMITTED: &str = "src/sys/bindings.rs";
/// Set to rewrite [`COMMITTED`] after a change to `flux-headers/`.
const BLESS: &str = "FLUXK8S_BLESS_BINDINGS";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for header in HEADERS {
        println!("cargo::rerun-if-changed={header}");
    }
    println!("cargo::rerun-if-changed={COMMITTED}");
    println!("cargo::rerun-if-env-changed=LIBCLANG_PATH");
    println!("cargo::rerun-if-env-changed={BLESS}");

    // The fake broker serves the FFI tests, which build with the `sim` feature.
    if env::var_os("CARGO_FEATURE_SIM").is_some() {
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        build_fake_host_for_tests(&out);
    }
    let Some(generated) = generate() else {
        return;
    };
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    if generated == committed {
        return;
    }
    if env::var_os(BLESS).is_some() {
        std::fs::write(COMMITTED, generated).expect("cannot write the committed bindings");
    } else {
        panic!(
            "{COMMITTED} differs from what bindgen makes of flux-headers/ now; after changing \
             the headers, run `{BLESS}=1 cargo build` and commit the result"
        );
    }
}

/// The bindings bindgen makes of our headers, or `None` when libclang cannot be loaded.
fn generate() -> Option<String> {
    let rust_target = bindgen::RustTarget::stable(89, 0)
        .unwrap_or_else(|e| panic!("bindgen cannot target rustc 1.89: {e}"));
    let builder = bindgen::Builder::default()
        .header("flux-headers/wrapper.h")
        .rust_target(rust_target)
        .rust_edition(bindgen::RustEdition::Edition2024)
        .wrap_unsafe_ops(true)
        .allowlist_function("flux_.*")
        .allowlist_function("json_dumps")
        .allowlist_function("pthread_setcancelstate")
        .allowlist_type("flux_.*")
        .allowlist_var("FLUX_.*")
        .allowlist_var("LOG_.*")
        .allowlist_var("JSON_.*")
        .allowlist_var("PTHREAD_CANCEL_.*")
        .parse_callbacks(Box::new(MacroTypes))
        .layout_tests(true);
    // bindgen panics when it cannot load libclang; that only means "use the committed file".
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let generated =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate()));
    std::panic::set_hook(quiet);
    match generated {
        Ok(bindings) => Some(
            bindings
                .expect("bindgen failed on flux-headers/wrapper.h")
                .to_string(),
        ),
        Err(_) => None,
    }
}

/// The FFI tests run `mod_main` against a fake broker. Its variadic calls (`flux_log`,
/// `flux_conf_unpack`) must be C; they go into `libfakeflux.a`, which only
/// `tests/ffi_module.rs` links (by `#[link]`), never the shipped library.
fn build_fake_host_for_tests(out: &std::path::Path) {
    println!("cargo::rerun-if-changed=tests/fakehost/variadic.c");
    cc::Build::new()
        .file("tests/fakehost/variadic.c")
        .warnings(true)
        // No automatic rustc-link-lib: that would put the fake into the cdylib.
        .cargo_metadata(false)
        .out_dir(out)
        .compile("fakeflux");
    println!("cargo::rustc-link-search=native={}", out.display());
}

/// Gives each macro constant the C type of the argument it is passed as, so the safe
/// layer needs no casts: node ids, role masks and match tags are `uint32_t`, jansson
/// flags `size_t`, everything else `int`.
#[derive(Debug)]
struct MacroTypes;

impl ParseCallbacks for MacroTypes {
    fn int_macro(&self, name: &str, _value: i64) -> Option<IntKind> {
        let unsigned32 = ["FLUX_NODEID_", "FLUX_ROLE_", "FLUX_MATCHTAG_"];
        if unsigned32.iter().any(|prefix| name.starts_with(prefix)) {
            Some(IntKind::U32)
        } else if name.starts_with("JSON_") {
            Some(IntKind::Custom {
                name: "usize",
                is_signed: false,
            })
        } else {
            Some(IntKind::Int)
        }
    }
}
