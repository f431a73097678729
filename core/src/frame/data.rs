//! The checking parse of a publication's `data` (docs/protocol.md §8,
//! "Data"). JSON that a lenient reader accepts can still break strict ones:
//! `1e999999` is infinite, a 60,000-digit integer overflows Python's default
//! limit, a lone surrogate `"\ud800"` is not a Unicode string. Stored once,
//! such data breaks history and recovery for every subscriber of the
//! channel, so every door that accepts `data` (client frames, the server
//! API, the Pusher door) refuses it with [`check`] before it is published.
//!
//! The scan is iterative over bytes and recursive only over nesting, which
//! it bounds before descending: any input is safe to check.

use thiserror::Error;

/// Deepest nesting of arrays and objects accepted in `data`. Subscribers'
/// JSON parsers (browsers, mobile SDKs) have recursion limits of their
/// own; one publisher must not be able to crash them all.
pub const MAX_DATA_DEPTH: usize = 64;

/// Longest number accepted in `data`, in characters (sign, digits, point
/// and exponent). A 64-bit float needs at most 17 significant digits;
/// longer numbers only carry a cost to parse (or a refusal) to readers.
pub const MAX_NUMBER_CHARS: usize = 100;

/// Why `data` was refused; the message is what the client reads after
/// `bad request: `.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    #[error("data nests deeper than {MAX_DATA_DEPTH} levels")]
    TooDeep,
    #[error("data has a number longer than {MAX_NUMBER_CHARS} characters at byte {0}")]
    NumberTooLong(usize),
    #[error("data has a number beyond the range of a 64-bit float at byte {0}")]
    NumberOutOfRange(usize),
    #[error("data has an invalid escape at byte {0}")]
    BadEscape(usize),
    #[error("data has a lone UTF-16 surrogate escape at byte {0}")]
    LoneSurrogate(usize),
    #[error("data is not well-formed JSON at byte {0}")]
    Malformed(usize),
}

/// Checks that `raw` is one JSON value that strict parsers read as it was
/// meant: nesting at most [`MAX_DATA_DEPTH`], numbers at most
/// [`MAX_NUMBER_CHARS`] long and finite as 64-bit floats, every escape
/// well formed and every `\u` surrogate paired.
pub fn check(raw: &str) -> Result<(), DataError> {
    let mut scan = Scan {
        bytes: raw.as_bytes(),
        at: 0,
    };
    scan.skip_space();
    scan.value(0)?;
    scan.skip_space();
    if scan.at != scan.bytes.len() {
        return Err(DataError::Malformed(scan.at));
    }
    Ok(())
}

/// Whether `raw` (valid JSON) nests deeper than `max`. A byte scan: no
/// recursion, so any depth is safe to check.
pub fn nests_deeper_than(raw: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in raw.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), DataError> {
        if self.peek() != Some(b) {
            return Err(DataError::Malformed(self.at));
        }
        self.at += 1;
        Ok(())
    }

    /// One value at nesting `depth` (0: the top).
    fn value(&mut self, depth: usize) -> Result<(), DataError> {
        match self.peek() {
            Some(b'{') => self.container(depth, b'}', true),
            Some(b'[') => self.container(depth, b']', false),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            _ => Err(DataError::Malformed(self.at)),
        }
    }

    fn word(&mut self, word: &[u8]) -> Result<(), DataError> {
        if !self.bytes[self.at..].starts_with(word) {
            return Err(DataError::Malformed(self.at));
        }
        self.at += word.len();
        Ok(())
    }

    /// An array or, with `keyed`, an object; `self.at` is on its opening
    /// bracket.
    fn container(&mut self, depth: usize, close: u8, keyed: bool) -> Result<(), DataError> {
        if depth >= MAX_DATA_DEPTH {
            return Err(DataError::TooDeep);
        }
        self.at += 1;
        self.skip_space();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            if keyed {
                self.skip_space();
                if self.peek() != Some(b'"') {
                    return Err(DataError::Malformed(self.at));
                }
                self.string()?;
                self.skip_space();
                self.expect(b':')?;
            }
            self.skip_space();
            self.value(depth + 1)?;
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b) if b == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(DataError::Malformed(self.at)),
            }
        }
    }

    /// A string; `self.at` is on its opening quote.
    fn string(&mut self) -> Result<(), DataError> {
        self.at += 1;
        loop {
            let start = self.at;
            match self.peek() {
                None => return Err(DataError::Malformed(self.at)),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                // Raw control characters are not JSON.
                Some(0..=0x1f) => return Err(DataError::Malformed(start)),
                Some(_) => self.at += 1,
            }
        }
    }

    /// One escape; `self.at` is on its backslash.
    fn escape(&mut self) -> Result<(), DataError> {
        let start = self.at;
        match self.bytes.get(start + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.unit(start)?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate counts only with the low one
                        // right after it.
                        if self.bytes.get(self.at) != Some(&b'\\')
                            || self.bytes.get(self.at + 1) != Some(&b'u')
                        {
                            return Err(DataError::LoneSurrogate(start));
                        }
                        let low = self.unit(self.at)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(DataError::LoneSurrogate(start));
                        }
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(DataError::LoneSurrogate(start)),
                    _ => Ok(()),
                }
            }
            _ => Err(DataError::BadEscape(start)),
        }
    }

    /// The code unit of `\uXXXX` at `start`; moves past it.
    fn unit(&mut self, start: usize) -> Result<u16, DataError> {
        let hex = self
            .bytes
            .get(start + 2..start + 6)
            .ok_or(DataError::BadEscape(start))?;
        let mut unit = 0u16;
        for &h in hex {
            let digit = (h as char)
                .to_digit(16)
                .ok_or(DataError::BadEscape(start))?;
            unit = unit << 4 | digit as u16;
        }
        self.at = start + 6;
        Ok(unit)
    }

    /// A number, by JSON's grammar; `self.at` is on its first byte.
    fn number(&mut self) -> Result<(), DataError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(DataError::Malformed(self.at)),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.required_digits()?;
        }
        if self.at - start > MAX_NUMBER_CHARS {
            return Err(DataError::NumberTooLong(start));
        }
        // The grammar above is a subset of what Rust's float parser reads.
        let text = std::str::from_utf8(&self.bytes[start..self.at])
            .map_err(|_| DataError::Malformed(start))?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(()),
            _ => Err(DataError::NumberOutOfRange(start)),
        }
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), DataError> {
        let start = self.at;
        self.digits();
        if self.at == start {
            return Err(DataError::Malformed(start));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_strict_parsers_read() {
        for ok in [
            "null",
            " true ",
            "false",
            "0",
            "-0.5e-3",
            "1E+308",
            "1e-999999",
            "123456789012345678901234567890",
            r#""""#,
            r#""a\"\\\/\b\f\n\r\t\u00e9""#,
            r#""\ud83d\ude00""#,
            r#""é😀""#,
            r#"{"a":[1,{"b":null}],"c":"d"}"#,
            "[ ]",
            "{ }",
            &format!("1{}", "0".repeat(MAX_NUMBER_CHARS - 1)),
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
            serde_json::from_str::<serde_json::Value>(ok).unwrap();
        }
    }

    #[test]
    fn refuses_poison_with_its_place() {
        assert_eq!(check("1e999999"), Err(DataError::NumberOutOfRange(0)));
        assert_eq!(check("[1,-1e309]"), Err(DataError::NumberOutOfRange(3)));
        assert_eq!(
            check(&format!("[{}]", "9".repeat(60_000))),
            Err(DataError::NumberTooLong(1))
        );
        assert_eq!(
            check(&format!("1{}", "0".repeat(MAX_NUMBER_CHARS))),
            Err(DataError::NumberTooLong(0))
        );
        assert_eq!(check(r#""\ud800""#), Err(DataError::LoneSurrogate(1)));
        assert_eq!(check(r#""\ud800x""#), Err(DataError::LoneSurrogate(1)));
        assert_eq!(
            check(r#"{"k":"\ud800\u0041"}"#),
            Err(DataError::LoneSurrogate(6))
        );
        assert_eq!(check(r#""\udc00\ud800""#), Err(DataError::LoneSurrogate(1)));
        assert_eq!(check(r#"{"\udfff":1}"#), Err(DataError::LoneSurrogate(2)));
        assert_eq!(check(r#""\x41""#), Err(DataError::BadEscape(1)));
        assert_eq!(check(r#""\u12G4""#), Err(DataError::BadEscape(1)));
        assert_eq!(check(r#""\u12""#), Err(DataError::BadEscape(1)));
        assert_eq!(check("\"a\u{1}\""), Err(DataError::Malformed(2)));
        for bad in [
            "", "01", "1.", "-", "1e", "[1,]", "{\"a\"}", "tru", "[1] 2", "\"x",
        ] {
            assert!(matches!(check(bad), Err(DataError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn nesting_is_bounded_before_descent() {
        let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check(&at(MAX_DATA_DEPTH)), Ok(()));
        assert_eq!(check(&at(MAX_DATA_DEPTH + 1)), Err(DataError::TooDeep));
        assert_eq!(check(&"[".repeat(1_000_000)), Err(DataError::TooDeep));
        assert!(!nests_deeper_than(r#"{"a":"[[[[\"[[["}"#, 1));
    }

    #[test]
    fn messages_name_the_rule() {
        assert_eq!(
            DataError::TooDeep.to_string(),
            "data nests deeper than 64 levels"
        );
        assert_eq!(
            DataError::NumberTooLong(3).to_string(),
            "data has a number longer than 100 characters at byte 3"
        );
    }
}
