//! The `Stripe-Signature` header grammar: `t=<unix seconds>` and `v1=<64 hex>` entries,
//! decoded in one pass without copying the header.

use super::{MalformedHeader, MAX_HEADER_ENTRIES, MAX_HEADER_LEN};

/// How many well-formed `v1` signatures are kept on the stack; more (which Stripe never
/// sends) spill to the heap.
const INLINE_SIGNATURES: usize = 4;

/// The parts of a `Stripe-Signature` header, decoded without copying the header.
#[derive(Debug)]
pub(crate) struct ParsedHeader<'h> {
    pub(crate) timestamp: i64,
    /// The timestamp's digits as signed: the header's own, without leading zeros (the
    /// SDKs sign the parsed number, so `t=0042` is signed as `42`).
    pub(crate) timestamp_digits: &'h [u8],
    /// The first well-formed `v1` signatures, decoded; `v1_valid` says how many are set.
    inline: [[u8; 32]; INLINE_SIGNATURES],
    /// Well-formed `v1` signatures past the first [`INLINE_SIGNATURES`].
    spilled: Vec<[u8; 32]>,
    pub(crate) v1_valid: usize,
    /// How many `v1` entries there were, well-formed or not.
    pub(crate) v1_seen: usize,
    pub(crate) v0_present: bool,
}

impl<'h> ParsedHeader<'h> {
    /// Parses a header in one pass, in time linear in its length.
    #[cfg(test)]
    pub(crate) fn parse(header: &'h str) -> Result<Self, MalformedHeader> {
        let mut out = Self::empty();
        out.read(header)?;
        Ok(out)
    }

    pub(crate) fn empty() -> Self {
        ParsedHeader {
            timestamp: 0,
            timestamp_digits: b"",
            inline: [[0u8; 32]; INLINE_SIGNATURES],
            spilled: Vec::new(),
            v1_valid: 0,
            v1_seen: 0,
            v0_present: false,
        }
    }

    /// Reads a header into an [`empty`](Self::empty) value, in one pass, in time linear
    /// in its length.
    pub(crate) fn read(&mut self, header: &'h str) -> Result<(), MalformedHeader> {
        if header.len() > MAX_HEADER_LEN {
            return Err(MalformedHeader::TooLong {
                len: header.len(),
                max: MAX_HEADER_LEN,
            });
        }
        let out = self;
        let mut timestamp = None;
        // Byte-wise: `,` `=` space and tab are ASCII, so every split lands on a char
        // boundary, and the entries are those `str::split(',')` would give.
        let mut rest = header.as_bytes();
        let mut index = 0;
        // The common first entry, `t=<digits>,`, read without the general path's scans.
        if let Some((digits, next)) = plain_timestamp_entry(rest) {
            timestamp = Some(parse_timestamp(digits)?);
            out.timestamp_digits = without_leading_zeros(digits);
            rest = next;
            index = 1;
        }
        loop {
            if index >= MAX_HEADER_ENTRIES {
                return Err(MalformedHeader::TooManyEntries {
                    max: MAX_HEADER_ENTRIES,
                });
            }
            // The common entry, a well-formed `v1`, is decoded as it is read, without a
            // separate scan for the comma that ends it.
            let next = if let Some(next) = out.well_formed_v1(rest) {
                out.v1_seen += 1;
                next
            } else {
                let (entry, next) = match rest.iter().position(|&b| b == b',') {
                    Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                    None => (rest, None),
                };
                let entry = trim_blanks(entry);
                let eq = entry
                    .iter()
                    .position(|&b| b == b'=')
                    .ok_or(MalformedHeader::EntryWithoutEquals { index })?;
                let (key, value) = (&entry[..eq], &entry[eq + 1..]);
                match key {
                    b"t" => {
                        if timestamp.is_some() {
                            return Err(MalformedHeader::DuplicateTimestamp);
                        }
                        timestamp = Some(parse_timestamp(value)?);
                        out.timestamp_digits = without_leading_zeros(value);
                    }
                    b"v1" => {
                        out.v1_seen += 1;
                        out.decode_signature(value);
                    }
                    b"v0" => out.v0_present = true,
                    _ => {}
                }
                next
            };
            match next {
                Some(next) => rest = next,
                None => break,
            }
            index += 1;
        }
        out.timestamp = timestamp.ok_or(MalformedHeader::MissingTimestamp)?;
        Ok(())
    }

    /// Decodes a `v1` value into the next free slot; a malformed one is skipped (it
    /// could never match). `false` if it was malformed.
    fn decode_signature(&mut self, hex: &[u8]) -> bool {
        let decoded = match self.inline.get_mut(self.v1_valid) {
            Some(slot) => decode_hex32(hex, slot),
            None => {
                let mut sig = [0u8; 32];
                let ok = decode_hex32(hex, &mut sig);
                if ok {
                    self.spilled.push(sig);
                }
                ok
            }
        };
        self.v1_valid += usize::from(decoded);
        decoded
    }

    /// Reads `v1=<64 hex digits>` at the start of `rest` (blanks around it allowed), up
    /// to the comma that ends it or the end of the header, decoding it into place. `None`
    /// for anything else, which the general path then reads.
    fn well_formed_v1<'r>(&mut self, rest: &'r [u8]) -> Option<Option<&'r [u8]>> {
        let value = trim_start_blanks(rest).strip_prefix(b"v1=")?;
        if value.len() < 64 {
            return None;
        }
        let (hex, after) = value.split_at(64);
        let next = match trim_start_blanks(after) {
            [] => None,
            [b',', next @ ..] => Some(next),
            _ => return None,
        };
        self.decode_signature(hex).then_some(next)
    }

    /// The well-formed `v1` signatures, decoded, in header order.
    pub(crate) fn signatures(&self) -> impl Iterator<Item = &[u8; 32]> {
        let inline = self.v1_valid.min(INLINE_SIGNATURES);
        self.inline[..inline].iter().chain(&self.spilled)
    }
}

/// `t=<1 to 19 digits>,` at the very start of a header: the digits and what follows the
/// comma. `None` for anything else (blanks, no comma, other keys), which the general
/// path then reads.
fn plain_timestamp_entry(header: &[u8]) -> Option<(&[u8], &[u8])> {
    let after = header.strip_prefix(b"t=")?;
    let len = after.iter().take_while(|b| b.is_ascii_digit()).count();
    match after.get(len) {
        Some(b',') if (1..=19).contains(&len) => Some((&after[..len], &after[len + 1..])),
        _ => None,
    }
}

/// `digits` (already checked to be ASCII digits) without its leading zeros; `"0"` for zero.
fn without_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&b| b == b'0').count();
    match &digits[zeros.min(digits.len().saturating_sub(1))..] {
        [] => b"0",
        rest => rest,
    }
}

fn trim_start_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Strips the spaces and tabs around a header entry.
fn trim_blanks(s: &[u8]) -> &[u8] {
    let mut s = trim_start_blanks(s);
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A plain non-negative decimal of 1 to 19 digits that fits in an `i64`.
fn parse_timestamp(bytes: &[u8]) -> Result<i64, MalformedHeader> {
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(MalformedHeader::InvalidTimestamp);
    }
    // Up to 18 digits always fit in an i64; only the 19th needs checked arithmetic.
    let (head, last) = bytes.split_at(bytes.len().min(18));
    let n = head.iter().fold(0i64, |n, &b| n * 10 + i64::from(b - b'0'));
    last.iter()
        .try_fold(n, |n, &b| {
            n.checked_mul(10)?.checked_add(i64::from(b - b'0'))
        })
        .ok_or(MalformedHeader::InvalidTimestamp)
}

/// Decodes exactly 64 hex characters (either case); anything else is `None`, and never
/// matches. The value is public (it came in the request), so this need not be
/// constant time; the comparison with the expected MAC is. Written without a branch or
/// a table lookup per byte, so that it vectorizes.
fn decode_hex32(value: &[u8], out: &mut [u8; 32]) -> bool {
    let Ok(hex) = <&[u8; 64]>::try_from(value) else {
        return false;
    };
    let mut valid = true;
    let mut nibbles = [0u8; 64];
    for (n, &c) in nibbles.iter_mut().zip(hex) {
        valid &= c.is_ascii_hexdigit();
        // Digits are 0x30..=0x39 (c >> 6 == 0); letters are 0x41..=0x46 and 0x61..=0x66
        // (c >> 6 == 1), whose low nibble plus 9 is their value. At most 15 + 27: no overflow.
        *n = (c & 0x0F) + 9 * (c >> 6);
    }
    if !valid {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(nibbles.chunks_exact(2)) {
        *o = (pair[0] << 4) | pair[1];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_header() {
        let sig = "a".repeat(64);
        let header = format!("t=123,v1={sig}");
        let p = ParsedHeader::parse(&header).unwrap();
        assert_eq!(p.timestamp, 123);
        assert_eq!(p.v1_valid, 1);
        assert_eq!(p.signatures().count(), 1);
        assert_eq!(p.v1_seen, 1);
        assert!(!p.v0_present);
    }

    #[test]
    fn timestamp_grammar() {
        for ok in ["0", "1", "0001", "1700000000", "9223372036854775807"] {
            assert!(parse_timestamp(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "+1",
            "-1",
            "1.5",
            "0x10",
            " 1",
            "1e3",
            "9223372036854775808",
            "12345678901234567890",
            "١٢",
        ] {
            assert_eq!(
                parse_timestamp(bad.as_bytes()),
                Err(MalformedHeader::InvalidTimestamp),
                "{bad}"
            );
        }
    }

    #[test]
    fn hex_decoding_is_exact() {
        fn decode(hex: &[u8]) -> Option<[u8; 32]> {
            let mut out = [0u8; 32];
            decode_hex32(hex, &mut out).then_some(out)
        }
        assert!(decode("0".repeat(64).as_bytes()).is_some());
        assert!(decode("A".repeat(64).as_bytes()).is_some());
        assert!(decode("0".repeat(63).as_bytes()).is_none());
        assert!(decode("0".repeat(65).as_bytes()).is_none());
        assert!(decode("g".repeat(64).as_bytes()).is_none());
        assert!(decode(b"").is_none());
        let mut mixed = *b"00112233445566778899aabbccddeeffAABBCCDDEEFF0123456789abcdefABCD";
        assert_eq!(decode(&mixed).unwrap()[..4], [0x00, 0x11, 0x22, 0x33]);
        for bad in [b'g', b'G', b' ', 0x80, 0xFF, b'/', b':', b'@', b'`'] {
            mixed[17] = bad;
            assert!(decode(&mixed).is_none(), "{bad:#x}");
        }
    }

    #[test]
    fn trims_only_blanks() {
        assert_eq!(trim_blanks(b" \t v1=ab \t"), b"v1=ab");
        assert_eq!(trim_blanks(b"  "), b"");
        assert_eq!(trim_blanks(b"\nx"), b"\nx");
    }

    #[test]
    fn timestamp_digits_are_signed_without_leading_zeros() {
        assert_eq!(without_leading_zeros(b"0"), b"0");
        assert_eq!(without_leading_zeros(b"000"), b"0");
        assert_eq!(without_leading_zeros(b"0042"), b"42");
        assert_eq!(without_leading_zeros(b"1700000000"), b"1700000000");
        let p = ParsedHeader::parse("t=0042,v1=x").unwrap();
        assert_eq!((p.timestamp, p.timestamp_digits), (42, &b"42"[..]));
    }

    #[test]
    fn more_signatures_than_fit_inline_are_all_kept() {
        let sigs: Vec<String> = (0..7u8).map(|i| format!("{i:02x}").repeat(32)).collect();
        let header = format!(
            "t=1, v1={} ,v1=zz,{}",
            sigs[0],
            sigs[1..]
                .iter()
                .map(|s| format!("v1={s}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let p = ParsedHeader::parse(&header).unwrap();
        assert_eq!((p.v1_seen, p.v1_valid), (8, 7));
        let got: Vec<u8> = p.signatures().map(|s| s[0]).collect();
        assert_eq!(got, (0..7u8).collect::<Vec<_>>());
    }
}
