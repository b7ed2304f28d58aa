//! Checks of the sandbox that auditors and tests can run against any
//! component: does it link against the host's network-free linker?

use wasmtime::component::Component;

use crate::error::{Error, Result};
use crate::runtime::{Runtime, sandbox_linker};

/// Compiles `component` and links it with exactly the linker tenant
/// instances get. A component that imports `wasi:sockets` or `wasi:http`
/// (or anything else the host does not provide) fails here.
pub fn link_check(runtime: &Runtime, component: &[u8]) -> Result<()> {
    let engine = runtime.engine();
    let component = Component::new(engine, component).map_err(|e| Error::runtime("cannot compile component", e))?;
    sandbox_linker(engine)?
        .instantiate_pre(&component)
        .map(|_| ())
        .map_err(|e| Error::runtime("component does not link in the sandbox", format!("{e:#}").replace('\n', " ")))
}
