//! Smoke benchmarks of the vault through the public host API: the cost of
//! unlocking (the KDF inside the component vs. native), of a tenant
//! instance, and of encrypting and decrypting through the component.
//! Results go to docs/BENCHMARKS.md.

use std::time::Duration;

use backendenc::{InitOptions, Runtime, Vault};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn kdf(c: &mut Criterion) {
    let mut g = c.benchmark_group("unlock");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path()).unwrap();
    vault.init("u", "c", b"correct horse battery staple", InitOptions::default()).unwrap();
    g.bench_function("component/pbkdf2-600k", |b| {
        b.iter(|| vault.unlock("u", "c", b"correct horse battery staple").unwrap())
    });
    g.bench_function("native/pbkdf2-600k", |b| {
        b.iter(|| {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"correct horse battery staple", &[7; 16], 600_000, &mut out);
            out
        })
    });
    let low = InitOptions { iterations: Some(1), insecure_allow_low_iterations_for_testing: true };
    vault.init("fast", "c", b"pw", low).unwrap();
    g.bench_function("component/instance+unlock-1-iteration", |b| b.iter(|| vault.unlock("fast", "c", b"pw").unwrap()));
    g.finish();
}

fn runtime(c: &mut Criterion) {
    let mut g = c.benchmark_group("runtime");
    g.sample_size(10);
    let cache = tempfile::tempdir().unwrap();
    Runtime::new(Some(cache.path())).unwrap();
    g.bench_function("load-precompiled-from-cache", |b| b.iter(|| Runtime::new(Some(cache.path())).unwrap()));
    g.bench_function("compile-uncached", |b| b.iter(|| Runtime::new(None).unwrap()));
    g.finish();
}

fn data(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path()).unwrap();
    let low = InitOptions { iterations: Some(1_000), insecure_allow_low_iterations_for_testing: true };
    let s = vault.init("u", "c", b"pw", low).unwrap();
    let mut g = c.benchmark_group("data");
    for size in [1024usize, 64 * 1024, 1 << 20] {
        let pt = vec![0xa5u8; size];
        let env = s.encrypt("memory", &pt, b"").unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("encrypt", size), &pt, |b, pt| {
            b.iter(|| s.encrypt("memory", pt, b"").unwrap())
        });
        g.bench_with_input(BenchmarkId::new("decrypt", size), &env, |b, env| {
            b.iter(|| s.decrypt("memory", env, b"").unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, kdf, runtime, data);
criterion_main!(benches);
