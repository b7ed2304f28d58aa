//! Builds the guest (`backendenc-guest`) for `wasm32-wasip2` with simd128 and
//! hands its path to the host crate as `BACKENDENC_GUEST_WASM`. It also
//! builds the test-only probe component (`tests/probe`, a few KiB) whose
//! path the sandbox tests read from `BACKENDENC_TEST_PROBE_WASM`.
//!
//! The guest gets its own target dir under `OUT_DIR` and none of the host's
//! RUSTFLAGS. If the wasm32-wasip2 target is missing, it is installed with
//! `rustup target add` (as wasm-pack does), or the build fails with the
//! exact command to run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ lives in the workspace").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Relative to host/ (cargo resolves them against the package root): absolute
    // paths would tie the fingerprint to one checkout, and another checkout
    // sharing the target dir would then reuse a stale guest.
    for watched in ["../guest/src", "../guest/Cargo.toml", "../tests/probe", "../wit", "../Cargo.lock", "../Cargo.toml"]
    {
        println!("cargo:rerun-if-changed={watched}");
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    ensure_target(&rustc);

    let target_dir = out_dir.join("guest-target");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "backendenc-guest",
            "-p",
            "backendenc-probe",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The guest must not inherit the host build's flags or wrappers.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("could not run cargo to build the guest: {e}")));
    if !status.success() {
        fail("building the guest component (backendenc-guest for wasm32-wasip2) failed; see the errors above");
    }
    let wasm = target_dir.join(TARGET).join("release").join("backendenc_guest.wasm");
    if !wasm.is_file() {
        fail(&format!("the guest build produced no {}", wasm.display()));
    }
    println!("cargo:rustc-env=BACKENDENC_GUEST_WASM={}", wasm.display());
    // A hostile stand-in component, for the sandbox tests only.
    let probe = target_dir.join(TARGET).join("release").join("backendenc_probe.wasm");
    println!("cargo:rustc-env=BACKENDENC_TEST_PROBE_WASM={}", probe.display());
}

/// Makes sure the standard library for wasm32-wasip2 is installed.
fn ensure_target(rustc: &std::ffi::OsStr) {
    if target_installed(rustc) {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with `rustup target add {TARGET}`");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !added || !target_installed(rustc) {
        fail(&format!("the {TARGET} target is not installed; run: rustup target add {TARGET}"));
    }
}

fn target_installed(rustc: &std::ffi::OsStr) -> bool {
    let Ok(out) = Command::new(rustc).args(["--print", "target-libdir", "--target", TARGET]).output() else {
        return false;
    };
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    out.status.success() && Path::new(&dir).join("libstd.rlib").exists()
        || std::fs::read_dir(&dir)
            .map(|mut entries| entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-"))))
            .unwrap_or(false)
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}
