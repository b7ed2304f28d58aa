//! Associated data: how every wrap and every ciphertext is bound to its place.
//!
//! `BIND(label, p1, …, pn) = LP(label) ‖ LP(p1) ‖ … ‖ LP(pn)` with
//! `LP(x) = u64be(len(x)) ‖ x`. Length prefixes make the encoding injective,
//! so no two distinct tuples produce the same bytes (unlike `a:b` joins).

/// Domain label of the KEK wrapped under the passphrase-derived master key.
pub const KEK_WRAP_LABEL: &[u8] = b"backendenc/v1/kek-wrap/passphrase";
/// Domain label of a DEK wrapped under the KEK.
pub const DEK_WRAP_LABEL: &[u8] = b"backendenc/v1/dek-wrap";
/// Domain label (HKDF info) of the key that seals the keyring body.
pub const BODY_KEY_LABEL: &[u8] = b"backendenc/v1/keyring-body-key";
/// Domain label of the keyring body's AAD.
pub const BODY_AAD_LABEL: &[u8] = b"backendenc/v1/keyring-body";
/// Domain label of data envelopes.
pub const DATA_LABEL: &[u8] = b"backendenc/v1/data";
/// Domain label of the KEK sealed to the recovery key.
pub const RECOVERY_WRAP_LABEL: &[u8] = b"backendenc/v1/kek-wrap/recovery";
/// Domain label (HKDF info) of the recovery wrap's key.
pub const RECOVERY_WRAP_KEY_LABEL: &[u8] = b"backendenc/v1/recovery-wrap-key";
/// Domain label of the recovery key's typo check.
pub const RECOVERY_CHECK_LABEL: &[u8] = b"backendenc/v1/recovery-check";
/// Domain label of audit-log MACs.
pub const AUDIT_MAC_LABEL: &[u8] = b"backendenc/v1/audit-mac";
/// Domain label of audit-log chain hashes.
pub const AUDIT_CHAIN_LABEL: &[u8] = b"backendenc/v1/audit-chain";
/// Domain label of scope ids in the audit log.
pub const AUDIT_SCOPE_LABEL: &[u8] = b"backendenc/v1/audit-scope";
/// Domain label (HKDF info) of a stream's per-file key.
pub const STREAM_KEY_LABEL: &[u8] = b"backendenc/v1/stream-key";
/// Domain label of a record file's id.
pub const RECORD_ID_LABEL: &[u8] = b"backendenc/v1/record-id";
/// Domain label of a record's caller AAD (binds the name).
pub const RECORD_AAD_LABEL: &[u8] = b"backendenc/v1/record";
/// Domain label of a scope's record-index file id.
pub const RECORD_INDEX_ID_LABEL: &[u8] = b"backendenc/v1/record-index-id";
/// Domain label of a record index's caller AAD.
pub const RECORD_INDEX_AAD_LABEL: &[u8] = b"backendenc/v1/record-index";
/// Domain label of an asset file's id.
pub const ASSET_ID_LABEL: &[u8] = b"backendenc/v1/asset-id";
/// Domain label of an asset's caller AAD (binds the name).
pub const ASSET_AAD_LABEL: &[u8] = b"backendenc/v1/asset";
/// Domain label of the tenant key hash.
pub const TENANT_LABEL: &[u8] = b"backendenc/v1/tenant";

/// Builds `BIND(label, parts…)`.
pub fn bind(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = 8 + label.len() + parts.iter().map(|p| 8 + p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    push_prefixed(&mut out, label);
    for part in parts {
        push_prefixed(&mut out, part);
    }
    out
}

fn push_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_in_parts_do_not_collide() {
        assert_ne!(bind(b"l", &[b"a:b", b"c"]), bind(b"l", &[b"a", b"b:c"]));
        assert_ne!(bind(b"l", &[b"ab", b""]), bind(b"l", &[b"a", b"b"]));
        assert_ne!(bind(b"l1", &[b"x"]), bind(b"l", &[b"1x"]));
    }

    #[test]
    fn layout_is_length_prefixed_big_endian() {
        let b = bind(b"L", &[b"xy"]);
        assert_eq!(b, [&[0, 0, 0, 0, 0, 0, 0, 1][..], b"L", &[0, 0, 0, 0, 0, 0, 0, 2], b"xy"].concat());
    }
}
