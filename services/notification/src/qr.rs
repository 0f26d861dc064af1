//! A ticket code as a QR code in a PNG image, for the HTML part of a confirmation
//! email. Mail clients show a PNG sent inline with the message (`cid:`), where Gmail
//! and Outlook drop SVG (inline or as a `data:` URI) and block remote images.
//! It is the QR code the gateway draws as `qrSvg` (`gateway/src/schema/tickets.rs`):
//! the code's bytes at error correction M, with the standard 4-module quiet zone.

use anyhow::Context;
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
    let dark = |x: usize, y: usize| {
        let (column, row) = (x / SCALE, y / SCALE);
        let inside = QUIET_ZONE..QUIET_ZONE + modules;
        inside.contains(&column)
            && inside.contains(&row)
            && colors.get((row - QUIET_ZONE) * modules + column - QUIET_ZONE) == Some(&Color::Dark)
    };
    // 1-bit greyscale rows, packed from the high bit: 1 is white, so are the padding
    // bits past the right edge.
    let row_bytes = side.div_ceil(8);
    let mut pixels = vec![0u8; row_bytes * side];
    for (y, row) in pixels.chunks_mut(row_bytes).enumerate() {
        for x in 0..row_bytes * 8 {
            if x >= side || !dark(x, y) {
                row[x / 8] |= 0x80 >> (x % 8);
            }
        }
    }
    let side = u32::try_from(side).context("a QR image too large for PNG")?;
    let mut image = Vec::new();
    let mut encoder = ::png::Encoder::new(&mut image, side, side);
    encoder.set_color(::png::ColorType::Grayscale);
    encoder.set_depth(::png::BitDepth::One);
    encoder.set_compression(::png::Compression::High);
    let mut writer = encoder.write_header().context("cannot write a QR image")?;
    writer.write_image_data(&pixels).context("cannot write a QR image")?;
    writer.finish().context("cannot write a QR image")?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the image (with an independent PNG decoder) and compares every pixel
    /// with the QR code the gateway would draw for the same code.
    #[test]
    fn the_png_is_the_qr_code_of_the_ticket_code_pixel_for_pixel() {
        let code: String = "AZ-_09xQ".chars().cycle().take(171).collect();
        let image = png(&code).unwrap();
        let mut decoder = ::png::Decoder::new(std::io::Cursor::new(&image));
        // One byte per pixel: 0 black, 255 white.
        decoder.set_transformations(::png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut pixels).unwrap();
        assert_eq!(
            (frame.color_type, frame.bit_depth),
            (::png::ColorType::Grayscale, ::png::BitDepth::Eight)
        );
        let side = frame.width as usize;
        assert_eq!(frame.height as usize, side);

        let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M).unwrap();
        let modules = qr.width();
        assert!(modules <= 57, "a ticket code fits version 10");
        assert_eq!(side, (modules + 2 * QUIET_ZONE) * SCALE);
        let black = |x: usize, y: usize| match pixels[y * frame.line_size + x] {
            0 => true,
            255 => false,
            other => panic!("pixel ({x}, {y}) is grey {other}"),
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
