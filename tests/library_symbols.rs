//! The shipped library's link contract: the broker provides libflux, so the `.so` must
//! not depend on it, and it exports nothing of ours but `mod_main`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tool_output(tool: &str, args: &[&str]) -> String {
    let so = fluxk8s::scenario::flux_core::module_path();
    let output = Command::new(tool)
        .args(args)
        .arg(&so)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (binutils is needed)"));
    assert!(output.status.success(), "{tool} {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn exports_only_mod_main() {
    let defined = tool_output("nm", &["-D", "--defined-only"]);
    let ours: Vec<&str> = defined
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        // Symbols the toolchain adds to every shared object, not ours.
        .filter(|name| !name.starts_with('_') && !name.starts_with("rust_eh_personality"))
        .collect();
    assert_eq!(ours, vec!["mod_main"], "{defined}");
}

#[test]
fn leaves_libflux_symbols_to_the_broker() {
    let undefined = tool_output("nm", &["-D", "--undefined-only"]);
    for symbol in [
        "flux_log",
        "flux_msg_handler_create",
        "flux_reactor_run",
        "json_dumps",
    ] {
        assert!(
            undefined
                .lines()
                .any(|l| l.split_whitespace().last() == Some(symbol)),
            "{symbol} should be undefined, resolved by the broker:\n{undefined}"
        );
    }
    let dynamic = tool_output("readelf", &["-d"]);
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(
        needed
            .iter()
            .all(|l| !l.contains("flux") && !l.contains("jansson")),
        "no DT_NEEDED on libflux-core or jansson: {needed:?}"
    );
}

/// The `libflux-core.so` of the flux-core whose command is `<prefix>/bin/flux`: in the
/// `libdir` of that prefix's own `flux-core.pc`, else in one of the library directories
/// installs use (`lib`, `lib64`, the multiarch one).
fn installed_libflux(flux: &Path) -> PathBuf {
    let prefix = flux
        .parent()
        .and_then(Path::parent)
        .expect("<prefix>/bin/flux");
    let multiarch = format!("lib/{}-linux-gnu", std::env::consts::ARCH);
    let lib_dirs: Vec<PathBuf> = ["lib", "lib64", &multiarch]
        .iter()
        .map(|dir| prefix.join(dir))
        .collect();
    // PKG_CONFIG_LIBDIR, not _PATH: only this prefix's .pc files, never another install's.
    let pc_dirs = std::env::join_paths(lib_dirs.iter().map(|dir| dir.join("pkgconfig")))
        .expect("library paths join");
    let pkg_config_libdir = Command::new("pkg-config")
        .args(["--variable=libdir", "flux-core"])
        .env("PKG_CONFIG_LIBDIR", pc_dirs)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let candidates: Vec<PathBuf> = pkg_config_libdir.into_iter().chain(lib_dirs).collect();
    candidates
        .iter()
        .map(|dir| dir.join("libflux-core.so"))
        .find(|lib| lib.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no libflux-core.so for {} in {candidates:?}",
                flux.display()
            )
        })
}

#[test]
fn every_declared_flux_function_exists_in_the_installed_libflux() {
    let Some(flux) = fluxk8s::scenario::flux_core::flux_or_skip(
        "every_declared_flux_function_exists_in_the_installed_libflux",
    ) else {
        return;
    };
    let lib = installed_libflux(&flux);
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .unwrap();
    assert!(output.status.success(), "nm {}", lib.display());
    let exported = String::from_utf8_lossy(&output.stdout);
    let header = include_str!("../flux-headers/fluxk8s-flux.h");
    let declared: Vec<&str> = header
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("flux_") && !word.ends_with("_t") && !word.ends_with("_f"))
        .filter(|word| header.contains(&format!("{word} (")))
        .collect();
    assert!(declared.len() > 30, "declarations found: {declared:?}");
    for name in declared {
        assert!(
            exported
                .lines()
                .any(|l| l.split_whitespace().last() == Some(name)),
            "{name} is declared in flux-headers but not exported by {}",
            lib.display()
        );
    }
}
