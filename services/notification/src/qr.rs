//! A ticket code as a QR code in a PNG image, for the HTML part of a confirmation
//! email. Mail clients show a PNG sent inline with the message (`cid:`), where Gmail
//! and Outlook drop SVG (inline or as a `data:` URI) and block remote images.
//! It is the QR code the gateway draws as `qrSvg` (`gateway/src/schema/tickets.rs`):
//! the code's bytes at error correction M, with the standard 4-module quiet zone.

use std::io::Write;

use anyhow::Context;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module: a version-10 code (57 modules, a typical ticket) with its quiet
/// zone is 260 px wide, the size phones scan off a screen without trouble.
const SCALE: usize = 4;
/// Light modules around the code, as the QR standard asks.
const QUIET_ZONE: usize = 4;

/// The PNG image of `code` as a QR code (square, black on white, 1 bit per pixel).
pub fn png(code: &str) -> anyhow::Result<Vec<u8>> {
    let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)
        .map_err(|e| anyhow::anyhow!("cannot draw a QR code: {e}"))?;
    let modules = qr.width();
    let colors = qr.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * SCALE;
    encode_bilevel(side, |x, y| {
        let (column, row) = (x / SCALE, y / SCALE);
        let inside = QUIET_ZONE..QUIET_ZONE + modules;
        inside.contains(&column)
            && inside.contains(&row)
            && colors.get((row - QUIET_ZONE) * modules + column - QUIET_ZONE) == Some(&Color::Dark)
    })
}

/// A square 1-bit greyscale PNG of `side` pixels, black where `dark(x, y)`.
fn encode_bilevel(side: usize, dark: impl Fn(usize, usize) -> bool) -> anyhow::Result<Vec<u8>> {
    let row_bytes = side.div_ceil(8);
    let mut pixels = Vec::with_capacity((row_bytes + 1) * side);
    for y in 0..side {
        // Each scanline starts with its filter type: 0, none.
        pixels.push(0);
        for byte in 0..row_bytes {
            let mut bits = 0u8;
            for bit in 0..8 {
                let x = byte * 8 + bit;
                // In greyscale 1 is white; the padding bits past the edge too.
                if x >= side || !dark(x, y) {
                    bits |= 0x80 >> bit;
                }
            }
            pixels.push(bits);
        }
    }
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::best());
    zlib.write_all(&pixels).context("cannot compress a QR image")?;
    let data = zlib.finish().context("cannot compress a QR image")?;
    let side = u32::try_from(side).context("a QR image too large for PNG")?;
    let mut header = Vec::with_capacity(13);
    header.extend(side.to_be_bytes());
    header.extend(side.to_be_bytes());
    // Bit depth 1, greyscale, deflate, adaptive filtering, not interlaced.
    header.extend([1, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &header)?;
    chunk(&mut png, b"IDAT", &data)?;
    chunk(&mut png, b"IEND", &[])?;
    Ok(png)
}

/// Length, type, data, and the CRC-32 of type and data.
fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) -> anyhow::Result<()> {
    let length = u32::try_from(data.len()).context("a PNG chunk too large")?;
    png.extend(length.to_be_bytes());
    let start = png.len();
    png.extend(kind);
    png.extend(data);
    let crc = crc32fast::hash(&png[start..]);
    png.extend(crc.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// The chunks of a PNG file, each CRC checked.
    fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut rest = &png[8..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let length = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = rest[4..8].try_into().unwrap();
            let data = rest[8..8 + length].to_vec();
            let crc = u32::from_be_bytes(rest[8 + length..12 + length].try_into().unwrap());
            assert_eq!(crc, crc32fast::hash(&rest[4..8 + length]), "CRC of {kind:?}");
            out.push((kind, data));
            rest = &rest[12 + length..];
        }
        out
    }

    /// Decodes the image back to pixels and compares every module with the QR code
    /// the gateway would draw for the same code.
    #[test]
    fn the_png_is_the_qr_code_of_the_ticket_code_pixel_for_pixel() {
        let code: String = "AZ-_09xQ".chars().cycle().take(171).collect();
        let png = png(&code).unwrap();
        let chunks = chunks(&png);
        let kinds: Vec<&[u8; 4]> = chunks.iter().map(|(kind, _)| kind).collect();
        assert_eq!(kinds, [b"IHDR", b"IDAT", b"IEND"]);
        let header = &chunks[0].1;
        let side = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        assert_eq!(u32::from_be_bytes(header[4..8].try_into().unwrap()) as usize, side);
        assert_eq!(&header[8..], [1, 0, 0, 0, 0]);

        let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M).unwrap();
        let modules = qr.width();
        assert!(modules <= 57, "a ticket code fits version 10");
        assert_eq!(side, (modules + 2 * QUIET_ZONE) * SCALE);
        let mut pixels = Vec::new();
        flate2::read::ZlibDecoder::new(&chunks[1].1[..]).read_to_end(&mut pixels).unwrap();
        let row_bytes = side.div_ceil(8);
        assert_eq!(pixels.len(), side * (row_bytes + 1));
        let black = |x: usize, y: usize| {
            let row = &pixels[y * (row_bytes + 1)..(y + 1) * (row_bytes + 1)];
            assert_eq!(row[0], 0, "no filter");
            row[1 + x / 8] & (0x80 >> (x % 8)) == 0
        };
        let colors = qr.to_colors();
        for y in 0..side {
            for x in 0..side {
                let (column, row) = (x / SCALE, y / SCALE);
                let in_code = (QUIET_ZONE..QUIET_ZONE + modules).contains(&column)
                    && (QUIET_ZONE..QUIET_ZONE + modules).contains(&row);
                let expected =
                    in_code && colors[(row - QUIET_ZONE) * modules + column - QUIET_ZONE] == Color::Dark;
                assert_eq!(black(x, y), expected, "pixel ({x}, {y})");
            }
        }
        // The finder pattern's corner module is dark: the image is not all white.
        assert!(black(QUIET_ZONE * SCALE, QUIET_ZONE * SCALE));
    }
}
