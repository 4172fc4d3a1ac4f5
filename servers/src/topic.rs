//! Topic names: the one validated `[A-Za-z0-9_-]{1,64}` type every pattern and the bus use.

use std::{fmt, sync::Arc};

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 64;

/// A validated topic name; cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is {0} characters long; at most {MAX_TOPIC_LEN} are allowed")]
    TooLong(usize),
    #[error("topic name contains {0:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadChar(char),
}

impl TopicName {
    pub fn parse(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(TopicError::BadChar(bad));
        }
        // Only ASCII is left, so bytes are characters.
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong(name.len()));
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(TopicName::parse("a").is_ok());
        assert!(TopicName::parse("Room_1-b").is_ok());
        assert!(TopicName::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(TopicName::parse(""), Err(TopicError::Empty));
        assert_eq!(
            TopicName::parse(&"x".repeat(65)),
            Err(TopicError::TooLong(65))
        );
        assert_eq!(TopicName::parse("a b"), Err(TopicError::BadChar(' ')));
        assert_eq!(TopicName::parse("a/b"), Err(TopicError::BadChar('/')));
        assert_eq!(TopicName::parse("é"), Err(TopicError::BadChar('é')));
    }
}
