//! Parsing of Kubernetes resource quantities (`500m`, `12Gi`, `1e3`) with the errors of
//! apimachinery's `resource.ParseQuantity`, which the real server raises while decoding a
//! request body (so they surface as `400 BadRequest`, not `422 Invalid`).

/// `ErrFormatWrong` text.
pub(crate) const FORMAT_ERR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Parses a quantity into its numeric value, or returns the apimachinery error text.
pub(crate) fn parse(s: &str) -> Result<f64, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Err(FORMAT_ERR);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let num_start = i;
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    if i == num_start {
        return Err(FORMAT_ERR);
    }
    let number = &s[..i];
    let suffix = &s[i..];
    // The rest must match `[eEinumkKMGTP]*[-+]?[0-9]*`.
    let sb = suffix.as_bytes();
    let mut j = 0;
    while j < sb.len() && b"eEinumkKMGTP".contains(&sb[j]) {
        j += 1;
    }
    if j < sb.len() && matches!(sb[j], b'+' | b'-') {
        j += 1;
    }
    while j < sb.len() && sb[j].is_ascii_digit() {
        j += 1;
    }
    if j != sb.len() {
        return Err(FORMAT_ERR);
    }
    let digits = number.trim_start_matches(['+', '-']);
    if digits.matches('.').count() > 1 || !digits.bytes().any(|b| b.is_ascii_digit()) {
        return Err("unable to parse numeric part of quantity");
    }
    let value: f64 = number
        .parse()
        .map_err(|_| "unable to parse numeric part of quantity")?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..]
                .parse()
                .map_err(|_| "unable to parse quantity's suffix")?;
            10f64.powi(e)
        }
        _ => return Err("unable to parse quantity's suffix"),
    };
    Ok(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_forms() {
        assert_eq!(parse("500m"), Ok(0.5));
        assert_eq!(parse("1Gi"), Ok(1024f64.powi(3)));
        assert_eq!(parse("2"), Ok(2.0));
        assert_eq!(parse("1e3"), Ok(1000.0));
        assert_eq!(parse("-1"), Ok(-1.0));
        assert_eq!(parse("1.5k"), Ok(1500.0));
    }

    #[test]
    fn rejects_like_apimachinery() {
        assert_eq!(parse("12 GiB"), Err(FORMAT_ERR));
        assert_eq!(parse("12GiB"), Err(FORMAT_ERR));
        assert_eq!(parse("abc"), Err(FORMAT_ERR));
        assert_eq!(
            parse("1.2.3"),
            Err("unable to parse numeric part of quantity")
        );
        assert_eq!(parse("1mm"), Err("unable to parse quantity's suffix"));
    }
}
