//! Per-tenant store state: the WASI context (one preopen, nothing else) and
//! the resource limits of the instance.

use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

/// What each tenant's `Store` holds.
pub struct State {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl State {
    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }
}
