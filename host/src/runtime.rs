//! The one `Engine`, the embedded component compiled once (and cached on
//! disk), the sockets-free linker, and the `InstancePre` every tenant's
//! instance is made from.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

use crate::bindings::BackendencPre;
use crate::error::{Error, Result};
use crate::state::State;

/// The guest component, built by `build.rs` for wasm32-wasip2.
pub const GUEST_WASM: &[u8] = include_bytes!(env!("BACKENDENC_GUEST_WASM"));

/// Epoch tick: the granularity of the per-call CPU bound.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(50);

/// Engine + compiled component + linker, shared by every vault in a process.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    pre: BackendencPre<State>,
    component: Component,
}

impl Runtime {
    /// The process-wide runtime, created on first use with the default
    /// cache directory (see [`default_cache_dir`]).
    pub fn shared() -> Result<Runtime> {
        static SHARED: OnceLock<std::result::Result<Runtime, Error>> = OnceLock::new();
        SHARED.get_or_init(|| Runtime::new(default_cache_dir().as_deref())).clone()
    }

    /// A runtime whose compiled component is cached in `cache_dir` (`None`:
    /// compile in memory every time).
    pub fn new(cache_dir: Option<&Path>) -> Result<Runtime> {
        Runtime::with_component(GUEST_WASM, cache_dir)
    }

    /// A runtime for another build of the vault component, run under the
    /// same sandbox: for auditing a component, and for the sandbox tests.
    pub fn with_component(wasm: &[u8], cache_dir: Option<&Path>) -> Result<Runtime> {
        let engine = new_engine()?;
        let component = load_component(&engine, wasm, cache_dir)?;
        let linker = sandbox_linker(&engine)?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| Error::runtime("cannot link the vault component", format!("{e:#}")))?;
        let pre =
            BackendencPre::new(instance_pre).map_err(|e| Error::runtime("component does not export the vault", e))?;
        start_epoch_ticker(&engine);
        Ok(Runtime { inner: Arc::new(RuntimeInner { engine, pre, component }) })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn pre(&self) -> &BackendencPre<State> {
        &self.inner.pre
    }

    /// The component's imports, as `name` strings (e.g. `wasi:filesystem/types@0.2.6`).
    pub fn component_imports(&self) -> Vec<String> {
        let ty = self.inner.component.component_type();
        ty.imports(&self.inner.engine).map(|(name, _)| name.to_owned()).collect()
    }
}

fn new_engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(OptLevel::Speed);
    Engine::new(&config).map_err(|e| Error::runtime("cannot create the wasm engine", e))
}

/// The linker every tenant instance is made with: WASI io, clocks,
/// filesystem, random and cli. No `wasi:sockets`, no `wasi:http`: a
/// component that imports either cannot be instantiated.
pub(crate) fn sandbox_linker(engine: &Engine) -> Result<Linker<State>> {
    build_linker(engine).map_err(|e| Error::runtime("cannot build the sandbox linker", e))
}

struct HasIo;
impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::<State>::new(engine);
    let l = &mut linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<State, HasIo>(l, |t| t.ctx().table)?;
    wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<State, HasIo>(l, |t| t.ctx().table)?;
    wasmtime_wasi::p2::bindings::sync::io::streams::add_to_linker::<State, HasIo>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<State, WasiClocks>(l, State::clocks)?;
    clocks::monotonic_clock::add_to_linker::<State, WasiClocks>(l, State::clocks)?;
    wasmtime_wasi::p2::bindings::sync::filesystem::types::add_to_linker::<State, WasiFilesystem>(l, State::filesystem)?;
    filesystem::preopens::add_to_linker::<State, WasiFilesystem>(l, State::filesystem)?;
    random::random::add_to_linker::<State, WasiRandom>(l, State::random)?;
    random::insecure::add_to_linker::<State, WasiRandom>(l, State::random)?;
    random::insecure_seed::add_to_linker::<State, WasiRandom>(l, State::random)?;
    cli::exit::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::environment::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::stdin::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::stdout::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::stderr::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_input::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_output::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_stdin::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_stdout::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_stderr::add_to_linker::<State, WasiCli>(l, State::cli)?;
    Ok(linker)
}

/// One thread per engine advances the epoch; it ends when the engine is gone.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("backendenc-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// `$BACKENDENC_CACHE_DIR`, else `$XDG_CACHE_HOME/backendenc`, else
/// `$HOME/.cache/backendenc`; `None` if none is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("BACKENDENC_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("backendenc")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("backendenc")))
}

/// Compiles `wasm`, or loads its precompiled form from `cache_dir`. The
/// cache key is the component's SHA-256 and the engine's compatibility
/// hash. The directory is created 0700; an existing one is used only if it
/// is ours and nobody else can write to it, and likewise each cached file.
fn load_component(engine: &Engine, wasm: &[u8], cache_dir: Option<&Path>) -> Result<Component> {
    let compile = || Component::new(engine, wasm).map_err(|e| Error::runtime("cannot compile the vault component", e));
    let Some(dir) = cache_dir else { return compile() };
    if prepare_private_dir(dir).is_err() {
        return compile();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let key = format!("{}-{:016x}.cwasm", hex::encode(&Sha256::digest(wasm)[..16]), h.finish());
    let path = dir.join(key);
    if let Some(component) = deserialize_cached(engine, &path) {
        return Ok(component);
    }
    let bytes =
        engine.precompile_component(wasm).map_err(|e| Error::runtime("cannot compile the vault component", e))?;
    // Best effort: a cache that cannot be written only costs start-up time.
    let _ = write_atomically(dir, &path, &bytes);
    deserialize_cached(engine, &path).map_or_else(compile, Ok)
}

#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, path: &Path) -> Option<Component> {
    if !is_private_file(path) {
        return None;
    }
    // Read into memory rather than `deserialize_file`: that would mmap the
    // file, and anyone truncating it later would crash this process (SIGBUS).
    let bytes = std::fs::read(path).ok()?;
    // SAFETY: `Component::deserialize` trusts its input to be wasmtime's own
    // output. The file was written by this code, atomically, into a
    // directory checked to be owned by this user and closed to everyone else
    // (0700), and is itself checked to be ours and not group/world writable;
    // its name carries the engine's compatibility hash, and wasmtime
    // re-checks compatibility and the artifact's header on load.
    unsafe { Component::deserialize(engine, &bytes) }.ok()
}

#[cfg(unix)]
fn prepare_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    // What matters is who can write here: the compiled code is not secret
    // (it ships inside this binary), but whoever can write it can run code.
    if !meta.is_dir() || meta.uid() != current_uid() || meta.permissions().mode() & 0o022 != 0 {
        return Err(std::io::Error::other("cache directory is writable by others"));
    }
    Ok(())
}

#[cfg(not(unix))]
fn prepare_private_dir(_dir: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("the compiled-component cache is only used on unix"))
}

#[cfg(unix)]
fn is_private_file(path: &Path) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file() && m.uid() == current_uid() && m.permissions().mode() & 0o022 == 0)
}

#[cfg(not(unix))]
fn is_private_file(_path: &Path) -> bool {
    false
}

#[cfg(unix)]
fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
