//! The burned-in "AI-GENERATED" label: a tiny 5×7 bitmap font, drawn white on a black box so
//! it reads on any background. Burned-in text survives every viewer, export and screenshot,
//! which is why it is there in addition to the DICOM attributes.

/// 5×7 glyphs, one byte per row, the low 5 bits left to right.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        _ => [0; 7],
    }
}

/// Characters the font can draw (others are drawn as spaces).
#[cfg(test)]
fn drawable(c: char) -> bool {
    c == ' ' || glyph(c) != [0; 7]
}

/// Draws `lines` into a 16-bit frame at the top corner on the side away from the chest wall.
/// The text height is about 1.5 % of the image height per line.
pub fn burn_in(
    pixels: &mut [u16],
    rows: usize,
    cols: usize,
    lines: &[&str],
    chest_wall_left: bool,
    white: u16,
) {
    let scale = (rows / 450).max(1);
    let (cw, ch) = (6 * scale, 9 * scale);
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) * cw + 2 * scale;
    let height = lines.len() * ch + 2 * scale;
    if width >= cols || height >= rows {
        return;
    }
    let margin = 2 * scale;
    let x0 = if chest_wall_left {
        cols - width - margin
    } else {
        margin
    };
    let y0 = margin;
    for y in y0..y0 + height {
        pixels[y * cols + x0..y * cols + x0 + width].fill(0);
    }
    for (li, line) in lines.iter().enumerate() {
        for (ci, c) in line.chars().enumerate() {
            let g = glyph(c);
            for (gy, bits) in g.iter().enumerate() {
                for gx in 0..5 {
                    if bits & (0x10 >> gx) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        let y = y0 + scale + li * ch + gy * scale + dy;
                        let x = x0 + scale + ci * cw + gx * scale;
                        pixels[y * cols + x..y * cols + x + scale].fill(white);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_is_drawn_away_from_the_chest_wall() {
        let (rows, cols) = (900, 700);
        for chest_left in [true, false] {
            let mut px = vec![1000u16; rows * cols];
            burn_in(&mut px, rows, cols, &["AI-GENERATED"], chest_left, 4095);
            let white: Vec<usize> = (0..rows * cols)
                .filter(|&i| px[i] == 4095)
                .map(|i| i % cols)
                .collect();
            assert!(white.len() > 100);
            let mean_x = white.iter().sum::<usize>() / white.len();
            assert_eq!(mean_x > cols / 2, chest_left, "label on the wrong side");
        }
        assert!("AI-GENERATED SYNTHETIC RC - NOT ACQUIRED".chars().all(drawable));
        assert!(super::super::OOD_LABEL.chars().all(drawable));
    }
}
