//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`): just enough to
//! validate them and to compare or add two of them, in milli-units.

/// A parsed quantity, in thousandths of the base unit (millicores, milli-bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    milli: i128,
}

impl Quantity {
    /// Zero of anything.
    pub const ZERO: Quantity = Quantity { milli: 0 };

    /// Whether `text` is in the Kubernetes quantity grammar but beyond what
    /// [`Quantity::parse`] reads: more than 30 digits, or a decimal
    /// exponent outside -30..=30 (`1e400`). Kubernetes accepts such values;
    /// k8sworker refuses them, as no resource needs them and requests and
    /// limits must be compared.
    pub fn is_out_of_range(text: &str) -> bool {
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let number_ok = !(whole.is_empty() && fraction.is_empty())
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.bytes().all(|b| b.is_ascii_digit());
        let exponent = suffix
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
        let known_suffix = matches!(
            suffix,
            "" | "Ki"
                | "Mi"
                | "Gi"
                | "Ti"
                | "Pi"
                | "Ei"
                | "n"
                | "u"
                | "m"
                | "k"
                | "M"
                | "G"
                | "T"
                | "P"
                | "E"
        );
        number_ok && (exponent || known_suffix) && Quantity::parse(text).is_none()
    }

    /// Parses the Kubernetes quantity grammar: a signed decimal number and an
    /// optional binary (`Ki`..`Ei`), decimal (`n`, `u`, `m`, `k`, `M`..`E`) or
    /// exponent (`e3`) suffix. Values below one milli-unit round up, as
    /// Kubernetes does.
    pub fn parse(text: &str) -> Option<Quantity> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let (negative, digits) = match number.as_bytes().first()? {
            b'-' => (true, &number[1..]),
            b'+' => (false, &number[1..]),
            _ => (false, number),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || whole.len() + fraction.len() > 30
        {
            return None;
        }
        // value = mantissa * 10^-(fraction digits), as an exact rational.
        let mantissa: i128 = format!("{whole}{fraction}").parse().ok()?;
        let scale = fraction.len() as i32;
        let (multiplier, exponent): (i128, i32) = match suffix {
            "" => (1, 0),
            "Ki" => (1 << 10, 0),
            "Mi" => (1 << 20, 0),
            "Gi" => (1 << 30, 0),
            "Ti" => (1 << 40, 0),
            "Pi" => (1 << 50, 0),
            "Ei" => (1 << 60, 0),
            "n" => (1, -9),
            "u" => (1, -6),
            "m" => (1, -3),
            "k" => (1, 3),
            "M" => (1, 6),
            "G" => (1, 9),
            "T" => (1, 12),
            "P" => (1, 15),
            "E" => (1, 18),
            _ => {
                let exp = suffix.strip_prefix(['e', 'E'])?;
                let value: i32 = exp.parse().ok()?;
                if !(-30..=30).contains(&value) {
                    return None;
                }
                (1, value)
            }
        };
        // milli = mantissa * multiplier * 10^(exponent + 3 - scale), rounded up.
        let power = exponent + 3 - scale;
        let base = mantissa.checked_mul(multiplier)?;
        let milli = if power >= 0 {
            base.checked_mul(10i128.checked_pow(power as u32)?)?
        } else {
            let divisor = 10i128.checked_pow((-power) as u32)?;
            // Rounded up without `base + divisor - 1`, which overflows for
            // a base near i128::MAX (`0.0147573952589676412927Ei`).
            base / divisor + i128::from(base % divisor != 0)
        };
        Some(Quantity {
            milli: if negative { -milli } else { milli },
        })
    }

    /// Thousandths of the base unit.
    pub fn milli(self) -> i128 {
        self.milli
    }

    /// Whether the quantity is a whole number of units (GPUs must be).
    pub fn is_whole(self) -> bool {
        self.milli % 1000 == 0
    }

    /// `self + other`, `None` on overflow.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        Some(Quantity {
            milli: self.milli.checked_add(other.milli)?,
        })
    }

    /// `self * factor`, `None` on overflow.
    pub fn checked_mul(self, factor: i64) -> Option<Quantity> {
        Some(Quantity {
            milli: self.milli.checked_mul(i128::from(factor))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> i128 {
        Quantity::parse(text)
            .unwrap_or_else(|| panic!("{text} should parse"))
            .milli()
    }

    #[test]
    fn parses_the_kubernetes_forms() {
        assert_eq!(q("500m"), 500);
        assert_eq!(q("1"), 1000);
        assert_eq!(q("1.5"), 1500);
        assert_eq!(q("0.1"), 100);
        assert_eq!(q("1Ki"), 1024 * 1000);
        assert_eq!(q("1.5Gi"), 1_610_612_736 * 1000);
        assert_eq!(q("2k"), 2_000_000);
        assert_eq!(q("1e3"), 1_000_000);
        assert_eq!(q("1n"), 1); // rounds up to one milli-unit
        assert_eq!(q(".5"), 500);
        assert_eq!(q("-1"), -1000);
    }

    #[test]
    fn out_of_range_is_told_apart_from_malformed() {
        for big in ["1e400", "1E-31", "9999999999999999999999999999999", "1e+31"] {
            assert!(Quantity::is_out_of_range(big), "{big}");
        }
        for other in ["1", "1e3", "1i", "abc", "1 Gi", "", "1e", "1Ki"] {
            assert!(!Quantity::is_out_of_range(other), "{other}");
        }
    }

    #[test]
    fn rounding_up_a_base_near_the_limit_does_not_overflow() {
        // (2^67 - 1) * 2^60 = 2^127 - 2^60, divided by 10^19 and rounded up:
        // adding the divisor first overflowed i128 (a panic in debug builds,
        // a negative quantity in release builds).
        let base = ((1_i128 << 67) - 1) << 60;
        let expected = base / 10_i128.pow(19) + 1;
        assert_eq!(q("0.0147573952589676412927Ei"), expected);
        assert!(expected > 0);
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        for bad in [
            "", "m", "1.2.3", "1 Gi", "1gi", "1KB", "abc", "1e", "--1", "1e99", ".",
        ] {
            assert!(Quantity::parse(bad).is_none(), "{bad} should not parse");
        }
    }

    #[test]
    fn compares_across_suffixes() {
        assert!(Quantity::parse("1Gi") > Quantity::parse("1G"));
        assert!(Quantity::parse("999m") < Quantity::parse("1"));
        assert!(Quantity::parse("2").unwrap().is_whole());
        assert!(!Quantity::parse("1500m").unwrap().is_whole());
    }
}
