//! Layer compression. The libraries are pinned in Cargo.toml (flate2 with the
//! zlib-rs backend, zstd) because compressed digests depend on them.

use std::io::{self, Write};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

#[derive(Debug, thiserror::Error)]
#[error("--compression-level {level} is out of range for {compression:?}: {range}")]
pub struct LevelError {
    pub compression: Compression,
    pub level: i32,
    pub range: &'static str,
}

impl Compression {
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }

    pub fn check_level(self, level: i32) -> Result<i32, LevelError> {
        let (ok, range) = match self {
            Compression::Gzip => ((0..=9).contains(&level), "0 to 9"),
            Compression::Zstd => ((1..=19).contains(&level), "1 to 19"),
            Compression::None => (level == 0, "none takes no level"),
        };
        if ok {
            Ok(level)
        } else {
            Err(LevelError {
                compression: self,
                level,
                range,
            })
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// An encoder writing into `inner`.
    pub fn encoder<'a, W: Write + 'a>(self, level: i32, inner: W) -> io::Result<Encoder<'a, W>> {
        Ok(match self {
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level as u32),
            )),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(inner, level)?),
            Compression::None => Encoder::None(inner),
        })
    }
}

pub enum Encoder<'a, W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'a, W>),
    None(W),
}

impl<W: Write> Encoder<'_, W> {
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn roundtrip_each() {
        let data = b"hello hello hello hello".repeat(100);
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut e = c.encoder(c.default_level(), Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            let out = e.finish().unwrap();
            let mut back = Vec::new();
            match c {
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Compression::Zstd => back = zstd::decode_all(&out[..]).unwrap(),
                Compression::None => back = out.clone(),
            }
            assert_eq!(back, data, "{c:?}");
        }
        assert!(Compression::Gzip.check_level(10).is_err());
        assert!(Compression::Zstd.check_level(0).is_err());
    }
}
