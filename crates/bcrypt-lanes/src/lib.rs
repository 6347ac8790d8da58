//! bcrypt with several independent hashes interleaved on one core.
//!
//! bcrypt's inner loop (Blowfish's round function) is a chain of dependent S-box lookups:
//! one hash keeps a core's load units waiting most of the time. Computing `N` independent
//! hashes in lock step (the idea of John the Ripper's `BF_X2`) lets the out-of-order core
//! overlap their chains. [`hash_lanes`] computes `N` hashes with one salt and cost; the
//! result of every lane is byte-identical to the `bcrypt` crate's raw output for the same
//! password (same 72-byte truncation and terminating NUL).
//!
//! Safe Rust only; every state is wiped when dropped. It lives in its own crate so the
//! development profile can optimise it (`[profile.dev.package.pcr-bcrypt-lanes]`).

#![forbid(unsafe_code)]
// Lanes are indexed in lock step (`st[k]`, `lr[k]`, `words[k]`): index loops say that best.
#![allow(clippy::needless_range_loop)]

mod consts;

use zeroize::Zeroize;

/// bcrypt reads at most this many bytes of a password (including its terminating NUL).
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Bytes of a bcrypt hash that appear in its text form (the 24th is dropped).
pub const HASH_BYTES: usize = 23;

/// One Blowfish state.
#[derive(Clone)]
struct State {
    p: [u32; 18],
    s: [[u32; 256]; 4],
}

impl Drop for State {
    fn drop(&mut self) {
        self.p.zeroize();
        self.s.zeroize();
    }
}

impl State {
    fn initial() -> Self {
        Self { p: consts::P, s: consts::S }
    }
}

/// The 18 key words bcrypt XORs into the P-array: the password bytes (NUL-terminated,
/// cut at 72 bytes, as the `bcrypt` crate does) read cyclically as big-endian words.
fn key_words(password: &[u8]) -> [u32; 18] {
    let mut buf = [0u8; MAX_PASSWORD_BYTES];
    let copied = password.len().min(MAX_PASSWORD_BYTES);
    buf[..copied].copy_from_slice(&password[..copied]);
    let used = (copied + 1).min(MAX_PASSWORD_BYTES);
    let mut words = [0u32; 18];
    let mut pos = 0;
    for w in &mut words {
        for _ in 0..4 {
            if pos >= used {
                pos = 0;
            }
            *w = (*w << 8) | u32::from(buf[pos]);
            pos += 1;
        }
    }
    buf.zeroize();
    words
}

/// The four big-endian words of the 16-byte salt.
fn salt_words(salt: &[u8; 16]) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (w, chunk) in out.iter_mut().zip(salt.chunks_exact(4)) {
        *w = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    out
}

#[inline(always)]
fn round(s: &[[u32; 256]; 4], x: u32) -> u32 {
    let a = s[0][(x >> 24) as usize];
    let b = s[1][((x >> 16) & 0xff) as usize];
    let c = s[2][((x >> 8) & 0xff) as usize];
    let d = s[3][(x & 0xff) as usize];
    (a.wrapping_add(b) ^ c).wrapping_add(d)
}

/// Encrypts one block per lane, the lanes' instructions interleaved.
#[inline(always)]
fn encrypt<const N: usize>(st: &[State; N], lr: &mut [[u32; 2]; N]) {
    let mut l = [0u32; N];
    let mut r = [0u32; N];
    for k in 0..N {
        l[k] = lr[k][0];
        r[k] = lr[k][1];
    }
    for i in 0..8 {
        for k in 0..N {
            l[k] ^= st[k].p[2 * i];
            r[k] ^= round(&st[k].s, l[k]);
        }
        for k in 0..N {
            r[k] ^= st[k].p[2 * i + 1];
            l[k] ^= round(&st[k].s, r[k]);
        }
    }
    for k in 0..N {
        lr[k] = [r[k] ^ st[k].p[17], l[k] ^ st[k].p[16]];
    }
}

/// Blowfish's key schedule with `words` as the key, in every lane (`ExpandKey(state, 0, key)`).
#[inline(always)]
fn expand<const N: usize>(st: &mut [State; N], words: &[[u32; 18]; N]) {
    for k in 0..N {
        for i in 0..18 {
            st[k].p[i] ^= words[k][i];
        }
    }
    let mut lr = [[0u32; 2]; N];
    for i in 0..9 {
        encrypt(st, &mut lr);
        for k in 0..N {
            st[k].p[2 * i] = lr[k][0];
            st[k].p[2 * i + 1] = lr[k][1];
        }
    }
    for b in 0..4 {
        for j in 0..128 {
            encrypt(st, &mut lr);
            for k in 0..N {
                st[k].s[b][2 * j] = lr[k][0];
                st[k].s[b][2 * j + 1] = lr[k][1];
            }
        }
    }
}

/// bcrypt's salted key schedule (`ExpandKey(state, salt, key)`), in every lane.
fn expand_salted<const N: usize>(st: &mut [State; N], words: &[[u32; 18]; N], salt: &[u32; 4]) {
    for k in 0..N {
        for i in 0..18 {
            st[k].p[i] ^= words[k][i];
        }
    }
    let mut lr = [[0u32; 2]; N];
    // The salt is read cyclically two words at a time: (s0, s1), (s2, s3), (s0, s1)...
    let mut half = 0;
    let mut step = |st: &[State; N], lr: &mut [[u32; 2]; N]| {
        for x in lr.iter_mut() {
            x[0] ^= salt[half];
            x[1] ^= salt[half + 1];
        }
        half ^= 2;
        encrypt(st, lr);
    };
    for i in 0..9 {
        step(st, &mut lr);
        for k in 0..N {
            st[k].p[2 * i] = lr[k][0];
            st[k].p[2 * i + 1] = lr[k][1];
        }
    }
    for b in 0..4 {
        for j in 0..128 {
            step(st, &mut lr);
            for k in 0..N {
                st[k].s[b][2 * j] = lr[k][0];
                st[k].s[b][2 * j + 1] = lr[k][1];
            }
        }
    }
}

/// The raw bcrypt hashes (first 23 bytes) of `N` passwords under one salt and cost,
/// computed in lock step on the calling thread.
///
/// # Panics
/// When `cost` is outside bcrypt's 4..=31.
pub fn hash_lanes<const N: usize>(
    cost: u32,
    salt: &[u8; 16],
    passwords: [&[u8]; N],
) -> [[u8; HASH_BYTES]; N] {
    assert!((4..=31).contains(&cost), "bcrypt cost {cost} outside 4..=31");
    let mut keys = [[0u32; 18]; N];
    for (k, p) in keys.iter_mut().zip(passwords) {
        *k = key_words(p);
    }
    let salt4 = salt_words(salt);
    let mut salt18 = [[0u32; 18]; N];
    for lane in &mut salt18 {
        for (i, w) in lane.iter_mut().enumerate() {
            *w = salt4[i % 4];
        }
    }
    let mut st: [State; N] = std::array::from_fn(|_| State::initial());
    expand_salted(&mut st, &keys, &salt4);
    for _ in 0..1u64 << cost {
        expand(&mut st, &keys);
        expand(&mut st, &salt18);
    }
    // "OrpheanBeholderScryDoubt", encrypted 64 times per 64-bit block.
    const MAGIC: [u32; 6] = [0x4f72_7068, 0x6561_6e42, 0x6568_6f6c, 0x6465_7253, 0x6372_7944, 0x6f75_6274];
    let mut out = [[0u8; HASH_BYTES]; N];
    let mut full = [[0u8; 24]; N];
    for block in 0..3 {
        let mut lr = [[MAGIC[2 * block], MAGIC[2 * block + 1]]; N];
        for _ in 0..64 {
            encrypt(&st, &mut lr);
        }
        for k in 0..N {
            full[k][8 * block..8 * block + 4].copy_from_slice(&lr[k][0].to_be_bytes());
            full[k][8 * block + 4..8 * block + 8].copy_from_slice(&lr[k][1].to_be_bytes());
        }
    }
    for (o, f) in out.iter_mut().zip(&full) {
        o.copy_from_slice(&f[..HASH_BYTES]);
    }
    keys.zeroize();
    full.zeroize();
    out
}

/// The raw bcrypt hash (first 23 bytes) of one password: [`hash_lanes`] with one lane.
pub fn hash_one(cost: u32, salt: &[u8; 16], password: &[u8]) -> [u8; HASH_BYTES] {
    let [h] = hash_lanes::<1>(cost, salt, [password]);
    h
}

/// Raw hashes of any number of passwords, `N` at a time (the remainder one by one).
pub fn hash_many<const N: usize>(cost: u32, salt: &[u8; 16], passwords: &[&[u8]]) -> Vec<[u8; HASH_BYTES]> {
    let mut out = Vec::with_capacity(passwords.len());
    let mut chunks = passwords.chunks_exact(N);
    for chunk in &mut chunks {
        let lanes: [&[u8]; N] = std::array::from_fn(|k| chunk[k]);
        out.extend(hash_lanes::<N>(cost, salt, lanes));
    }
    for p in chunks.remainder() {
        out.push(hash_one(cost, salt, p));
    }
    out
}

/// [`hash_many`] with 1 lane, compiled in this crate (generic functions are compiled, and
/// optimised, in the crate that calls them; these are not, so the development profile's
/// `opt-level` of this crate applies).
pub fn hash_many_x1(cost: u32, salt: &[u8; 16], passwords: &[&[u8]]) -> Vec<[u8; HASH_BYTES]> {
    hash_many::<1>(cost, salt, passwords)
}

/// [`hash_many`] with 2 lanes, compiled in this crate (see [`hash_many_x1`]).
pub fn hash_many_x2(cost: u32, salt: &[u8; 16], passwords: &[&[u8]]) -> Vec<[u8; HASH_BYTES]> {
    hash_many::<2>(cost, salt, passwords)
}

/// [`hash_many`] with 3 lanes, compiled in this crate (see [`hash_many_x1`]).
pub fn hash_many_x3(cost: u32, salt: &[u8; 16], passwords: &[&[u8]]) -> Vec<[u8; HASH_BYTES]> {
    hash_many::<3>(cost, salt, passwords)
}

/// [`hash_many`] with 4 lanes, compiled in this crate (see [`hash_many_x1`]).
pub fn hash_many_x4(cost: u32, salt: &[u8; 16], passwords: &[&[u8]]) -> Vec<[u8; HASH_BYTES]> {
    hash_many::<4>(cost, salt, passwords)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_from_jbcrypt() {
        // $2a$06$DCq7YPn5Rq63x1Lad4cll.TV4S6ytwfsfvkgY8jIucDrjc8deX1s. (password "")
        let salt =
            [0x14, 0x4b, 0x3d, 0x69, 0x1a, 0x7b, 0x4e, 0xcf, 0x39, 0xcf, 0x73, 0x5c, 0x7f, 0xa7, 0xa7, 0x9c];
        let want = [
            0x55, 0x7e, 0x94, 0xf3, 0x4b, 0xf2, 0x86, 0xe8, 0x71, 0x9a, 0x26, 0xbe, 0x94, 0xac, 0x1e, 0x16,
            0xd9, 0x5e, 0xf9, 0xf8, 0x19, 0xde, 0xe0,
        ];
        assert_eq!(hash_one(6, &salt, b""), want);
        let [a, b, c] = hash_lanes::<3>(6, &salt, [b"", b"x", b""]);
        assert_eq!(a, want);
        assert_eq!(c, want);
        assert_ne!(b, want);
    }
}
