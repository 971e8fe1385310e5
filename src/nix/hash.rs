//! Nix's SHA-256 hashes in the forms Nix prints them: `sha256:<nixbase32>`
//! (Nix 2.8's `narHash`), `sha256-<base64>` (SRI, newer Nix and
//! `flake.lock`) and `sha256:<hex>`.

use crate::util::base64::{base64_decode, base64_encode};

/// Nix's base32 alphabet (no e, o, u, t).
const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a SHA-256 hash as Nix prints them (sha256:<base32>, sha256-<base64> or sha256:<hex>)")]
pub struct HashError(pub String);

/// A SHA-256 hash of a NAR serialisation (or of anything Nix hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn parse(s: &str) -> Result<Self, HashError> {
        let err = || HashError(s.to_string());
        let bytes = if let Some(b64) = s.strip_prefix("sha256-") {
            base64_decode(b64).ok_or_else(err)?
        } else if let Some(rest) = s.strip_prefix("sha256:") {
            match rest.len() {
                52 => nix32_decode(rest).ok_or_else(err)?,
                64 => hex_decode(rest).ok_or_else(err)?,
                _ => return Err(err()),
            }
        } else {
            return Err(err());
        };
        Ok(Sha256(bytes.try_into().map_err(|_| err())?))
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `sha256-<base64>`, as `flake.lock` and newer Nix write it.
    pub fn sri(&self) -> String {
        format!("sha256-{}", base64_encode(&self.0))
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Nix's base32: the last character holds the lowest bits.
fn nix32_decode(s: &str) -> Option<Vec<u8>> {
    let size = s.len() * 5 / 8;
    let mut out = vec![0u8; size];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = NIX32.iter().position(|&x| x == c)? as u16;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let v = digit << j;
        *out.get_mut(i)? |= v as u8;
        let carry = (v >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry,
            None if carry != 0 => return None,
            None => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_of_one_hash_agree() {
        // `nix hash to-base32` / `to-sri` of the same NAR hash.
        let b32 = "sha256:1ch2kf0k5b6xj8hyxl87xkbijivmlrkqwfy9zbl7y27g1ixwyh6n";
        let h = Sha256::parse(b32).unwrap();
        assert_eq!(
            h.sri(),
            "sha256-1kDPewzvCH/o+sk7jmemdUcZ1+wH0e4hkt2sMoGbArI="
        );
        assert_eq!(
            h.hex(),
            "d640cf7b0cef087fe8fac93b8e67a6754719d7ec07d1ee2192ddac32819b02b2"
        );
        let again = Sha256::parse(&h.sri()).unwrap();
        assert_eq!(h, again);
        assert_eq!(Sha256::parse(&format!("sha256:{}", h.hex())).unwrap(), h);
        for bad in ["md5:abc", "sha256:xyz", "sha256-!!", "sha256:eeee", ""] {
            assert!(Sha256::parse(bad).is_err(), "{bad}");
        }
        // A character out of the alphabet ('e') and an overflowing top digit.
        assert!(Sha256::parse(&b32.replace('1', "e")).is_err());
        assert!(Sha256::parse(&format!("sha256:z{}", &b32[8..])).is_err());
    }
}
