//! Image bytes for the media tests, made here (no image crate): a PNG of given pixels
//! (stored deflate blocks, CRC-32 and Adler-32 by hand), and headers of JPEG and WebP
//! files as the relay reads them; uploads addressed by their SHA-256.

use serde_json::Value;
use sha2::{Digest, Sha256};

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid RGB PNG of `w`×`h` whose pixel (x, y) is `f(x, y)`.
pub fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0);
        for x in 0..w {
            raw.extend_from_slice(&f(x, y));
        }
    }
    // zlib: a header, stored blocks of at most 65,535 bytes, Adler-32.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let n = b.len() as u16;
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&(!n).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut s) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        s = (s + a) % 65_521;
    }
    z.extend_from_slice(&((s << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A PNG whose header claims `w`×`h` (no pixels follow): a decompression bomb's shape.
pub fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    out
}

/// The start of a baseline JPEG of `w`×`h`: SOI, an APP0 segment, SOF0.
pub fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16];
    out.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    out.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&w.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    out
}

/// The start of a lossless WebP of `w`×`h`.
pub fn webp_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
    let bits = (w - 1) | ((h - 1) << 14);
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    out
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// PUTs `bytes` to `{url}/api/runs/{run}/media/{sha}` (`sha`: their own hash when
/// `None`) with `content_type`; returns (status, JSON body).
pub fn put_media(
    url: &str,
    run: &str,
    bytes: &[u8],
    sha: Option<&str>,
    content_type: &str,
) -> (u16, Value) {
    let sha = sha.map_or_else(|| sha256_hex(bytes), str::to_string);
    let res = ureq::put(&format!("{url}/api/runs/{run}/media/{sha}"))
        .set("Content-Type", content_type)
        .send_bytes(bytes);
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("PUT media: {e}"),
    }
}

/// GETs a run's media item: (status, headers asked for, bytes).
pub fn get_media(url: &str, run: &str, sha: &str, headers: &[&str]) -> (u16, Vec<String>, Vec<u8>) {
    let res = ureq::get(&format!("{url}/api/runs/{run}/media/{sha}")).call();
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET media: {e}"),
    };
    let status = r.status();
    let hs = headers
        .iter()
        .map(|h| r.header(h).unwrap_or("").to_string())
        .collect();
    let mut bytes = Vec::new();
    let _ = std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes);
    (status, hs, bytes)
}
