//! Kubernetes quantities (`250m`, `1`, `128Mi`, `1G`, `1e3`, `.5`) converted exactly into
//! Mesos units: cpus in cores, mem and disk in mebibytes, counts for gpus.
//!
//! The number is parsed into an integer mantissa with a decimal exponent and a binary
//! exponent, then scaled with integer arithmetic and rounded **up** to thousandths, as
//! Kubernetes' `MilliValue` does. No floating point is involved, so `0.1` cpu is exactly
//! `100` thousandths and `1G` of memory is `953.675` MiB (rounded up from 953.6743…).

use thiserror::Error;

use crate::resources::Scalar;

/// Why a quantity string could not be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Not the Kubernetes quantity grammar.
    #[error("{0:?} is not a quantity")]
    Syntax(String),
    /// A negative amount.
    #[error("{0:?} is negative")]
    Negative(String),
    /// Too large to represent.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// The unit a quantity is converted into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Cores: `1` is one core, `250m` a quarter.
    Cores,
    /// Bytes expressed in mebibytes (the Mesos `mem`/`disk` unit).
    Mebibytes,
    /// Whole items (gpus); fractions are rounded up to thousandths like everything else.
    Count,
}

/// Parses a quantity into cores (`cpu`).
pub fn parse_cpus(q: &str) -> Result<Scalar, QuantityError> {
    parse(q, Unit::Cores)
}

/// Parses a quantity of bytes into mebibytes (`memory`, `ephemeral-storage`).
pub fn parse_mebibytes(q: &str) -> Result<Scalar, QuantityError> {
    parse(q, Unit::Mebibytes)
}

/// Parses a quantity into `unit`, rounding up to thousandths.
pub fn parse(q: &str, unit: Unit) -> Result<Scalar, QuantityError> {
    let syntax = || QuantityError::Syntax(q.to_owned());
    let too_large = || QuantityError::TooLarge(q.to_owned());

    let (negative, rest) = match q.as_bytes().first() {
        Some(b'-') => (true, &q[1..]),
        Some(b'+') => (false, &q[1..]),
        _ => (false, q),
    };
    // Split the number from the suffix.
    let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = rest.split_at(num_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(syntax());
    }
    let (exp10_suffix, exp2): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => {
            let e = &s[1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 6
            {
                return Err(syntax());
            }
            (e.parse::<i64>().map_err(|_| syntax())?, 0)
        }
        _ => return Err(syntax()),
    };

    // Mantissa: all digits without the dot, leading zeros dropped.
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| syntax())?;
    if digits.is_empty() {
        return Ok(Scalar::ZERO);
    }
    if negative {
        return Err(QuantityError::Negative(q.to_owned()));
    }
    if digits.len() > 36 {
        return Err(too_large());
    }
    let mantissa: u128 = digits.parse().map_err(|_| syntax())?;
    let exp10 = exp10_suffix - frac_len;

    // value_in_thousandths = mantissa * 10^exp10 * 2^exp2 * 1000 / unit_bytes
    let (unit_shift, unit_mult): (u32, u128) = match unit {
        Unit::Cores | Unit::Count => (0, 1),
        Unit::Mebibytes => (20, 1),
    };
    let mut num = mantissa.checked_mul(1000 * unit_mult).ok_or_else(too_large)?;
    let mut den: u128 = 1;
    // Binary parts cancel first to keep numbers small.
    let (mut b_num, mut b_den) = (exp2, unit_shift);
    let common = b_num.min(b_den);
    b_num -= common;
    b_den -= common;
    num = num.checked_mul(1u128.checked_shl(b_num).ok_or_else(too_large)?).ok_or_else(too_large)?;
    den <<= b_den;
    if exp10 >= 0 {
        let p = 10u128
            .checked_pow(u32::try_from(exp10).map_err(|_| too_large())?)
            .ok_or_else(too_large)?;
        num = num.checked_mul(p).ok_or_else(too_large)?;
    } else {
        match u32::try_from(-exp10).ok().and_then(|e| 10u128.checked_pow(e)) {
            Some(p) => den = den.checked_mul(p).ok_or_else(too_large)?,
            // Far below a thousandth: rounds up to the smallest positive amount.
            None => return Ok(Scalar::from_milli(1)),
        }
    }
    let milli = num.div_ceil(den);
    i64::try_from(milli).map(Scalar::from_milli).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(q: &str) -> i64 {
        parse_cpus(q).unwrap().milli()
    }
    fn mib(q: &str) -> i64 {
        parse_mebibytes(q).unwrap().milli()
    }

    #[test]
    fn cpus() {
        assert_eq!(cpu("250m"), 250);
        assert_eq!(cpu("1"), 1000);
        assert_eq!(cpu("0.1"), 100);
        assert_eq!(cpu(".5"), 500);
        assert_eq!(cpu("1."), 1000);
        assert_eq!(cpu("+2"), 2000);
        assert_eq!(cpu("1e3"), 1_000_000);
        assert_eq!(cpu("1E3"), 1_000_000);
        assert_eq!(cpu("1e-3"), 1);
        assert_eq!(cpu("1k"), 1_000_000);
        assert_eq!(cpu("100u"), 1, "rounds up to a thousandth");
        assert_eq!(cpu("1n"), 1);
        assert_eq!(cpu("1500000n"), 2);
        assert_eq!(cpu("0"), 0);
        assert_eq!(cpu("0m"), 0);
        assert_eq!(cpu("-0"), 0);
        assert_eq!(cpu("0.0001"), 1);
    }

    #[test]
    fn memory() {
        assert_eq!(mib("128Mi"), 128_000);
        assert_eq!(mib("1Gi"), 1_024_000);
        assert_eq!(mib("1Ki"), 1); // 0.0009765625 MiB rounds up
        assert_eq!(mib("1G"), 953_675); // 953.6743…
        assert_eq!(mib("1M"), 954); // 0.95367…
        assert_eq!(mib("1048576"), 1000);
        assert_eq!(mib("1e6"), 954);
        assert_eq!(mib("1.5Gi"), 1_536_000);
        assert_eq!(mib("1Ei"), 1_099_511_627_776_000);
        assert_eq!(mib("1"), 1);
    }

    #[test]
    fn counts() {
        assert_eq!(parse("2", Unit::Count).unwrap().milli(), 2000);
    }

    #[test]
    fn rejects() {
        for bad in [
            "", "abc", "1x", "1.2.3", "m", ".", "1e", "1e+", "1 ", " 1", "1Mi ", "1mi", "1ee3",
            "--1",
        ] {
            assert!(matches!(parse_cpus(bad), Err(QuantityError::Syntax(_))), "{bad:?}");
        }
        assert_eq!(parse_cpus("-1"), Err(QuantityError::Negative("-1".into())));
        assert!(matches!(parse_cpus("1e100"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(
            parse_cpus("99999999999999999999999999999999999999"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(parse_mebibytes("100000Ei"), Err(QuantityError::TooLarge(_))));
        assert_eq!(parse_cpus("1e-999").unwrap().milli(), 1);
        assert_eq!(parse_cpus("1e-999999").unwrap().milli(), 1);
    }
}
