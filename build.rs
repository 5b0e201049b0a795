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
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for header in HEADERS {
        println!("cargo::rerun-if-changed={header}");
    }
    println!("cargo::rerun-if-env-changed=LIBCLANG_PATH");

    let rust_target = bindgen::RustTarget::stable(89, 0)
        .unwrap_or_else(|e| panic!("bindgen cannot target rustc 1.89: {e}"));
    let bindings = bindgen::Builder::default()
        .header("flux-headers/wrapper.h")
        .rust_target(rust_target)
        .rust_edition(bindgen::RustEdition::Edition2024)
        .wrap_unsafe_ops(true)
        .allowlist_function("flux_.*")
        .allowlist_function("json_dumps")
        .allowlist_type("flux_.*")
        .allowlist_var("FLUX_.*")
        .allowlist_var("LOG_.*")
        .allowlist_var("JSON_.*")
        .parse_callbacks(Box::new(MacroTypes))
        .layout_tests(true)
        .generate()
        .expect("bindgen failed on flux-headers/wrapper.h (is libclang installed? apt-get install libclang-dev)");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    build_fake_host_for_tests(&out);
    bindings
        .write_to_file(out.join("flux_bindings.rs"))
        .expect("cannot write flux_bindings.rs");
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
