//! Agent attributes: named values that describe an agent (`rack:r1`,
//! `level:3`) but, unlike resources, are never consumed.

use std::collections::BTreeSet;
use std::fmt;

use crate::ranges::Ranges;
use crate::scalar::Scalar;

/// A Mesos agent attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    pub value: AttributeValue,
}

impl Attribute {
    /// A text attribute.
    pub fn text(name: impl Into<String>, value: impl Into<String>) -> Attribute {
        Attribute { name: name.into(), value: AttributeValue::Text(value.into()) }
    }
}

/// The value of an attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttributeValue {
    /// Text.
    Text(String),
    /// Scalar.
    Scalar(Scalar),
    /// Ranges.
    Ranges(Ranges),
    /// Set.
    Set(BTreeSet<String>),
}

impl fmt::Display for AttributeValue {
    /// The node-label form: text as is, scalars in shortest decimal form, ranges as
    /// `[a-b,c]`, sets as `{a,b}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeValue::Text(t) => f.write_str(t),
            AttributeValue::Scalar(s) => write!(f, "{s}"),
            AttributeValue::Ranges(r) => {
                f.write_str("[")?;
                for (i, x) in r.ranges().iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    if x.begin == x.end {
                        write!(f, "{}", x.begin)?;
                    } else {
                        write!(f, "{}-{}", x.begin, x.end)?;
                    }
                }
                f.write_str("]")
            }
            AttributeValue::Set(s) => {
                f.write_str("{")?;
                for (i, x) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(x)?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_form_of_values() {
        assert_eq!(AttributeValue::Text("r1".into()).to_string(), "r1");
        assert_eq!(AttributeValue::Scalar(Scalar::from_milli(8000)).to_string(), "8");
        assert_eq!(AttributeValue::Scalar(Scalar::from_milli(-2500)).to_string(), "-2.5");
        assert_eq!(
            AttributeValue::Ranges(Ranges::from_pairs([(5, 5), (1, 2)])).to_string(),
            "[1-2,5]"
        );
        assert_eq!(
            AttributeValue::Set(["b".to_owned(), "a".to_owned()].into()).to_string(),
            "{a,b}"
        );
        assert_eq!(Attribute::text("rack", "r1").value, AttributeValue::Text("r1".into()));
    }
}
