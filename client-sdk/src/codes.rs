//! Sets of gRPC status codes, for the statuses that count as a server's failure (outlier
//! detection) and the statuses a retry policy retries.

use std::fmt;

use tonic::Code;

/// Every gRPC status code, in numeric order.
const ALL: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// A set of gRPC status codes (a bit set: copying and testing membership cost nothing).
///
/// ```
/// use cloudmap_balancer::StatusCodes;
/// use tonic::Code;
/// let codes = StatusCodes::new([Code::Unavailable, Code::Internal]);
/// assert!(codes.contains(Code::Unavailable));
/// assert!(!codes.contains(Code::NotFound));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatusCodes(u32);

impl StatusCodes {
    /// No code.
    pub const EMPTY: Self = Self(0);

    /// The set of `codes`.
    pub fn new(codes: impl IntoIterator<Item = Code>) -> Self {
        codes.into_iter().fold(Self::EMPTY, Self::with)
    }

    /// This set and `code`.
    #[must_use]
    pub fn with(self, code: Code) -> Self {
        Self(self.0 | bit(code))
    }

    /// This set without `code`.
    #[must_use]
    pub fn without(self, code: Code) -> Self {
        Self(self.0 & !bit(code))
    }

    /// Whether `code` is in the set.
    #[inline]
    pub fn contains(self, code: Code) -> bool {
        self.0 & bit(code) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The codes in the set, in numeric order.
    pub fn iter(self) -> impl Iterator<Item = Code> {
        ALL.into_iter().filter(move |&code| self.contains(code))
    }
}

#[inline]
fn bit(code: Code) -> u32 {
    // Codes are 0 to 16; anything else (not constructible from tonic) maps to no bit.
    u32::try_from(code as i32)
        .ok()
        .and_then(|n| 1u32.checked_shl(n))
        .unwrap_or(0)
}

impl FromIterator<Code> for StatusCodes {
    fn from_iter<I: IntoIterator<Item = Code>>(iter: I) -> Self {
        Self::new(iter)
    }
}

impl fmt::Debug for StatusCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_and_order() {
        let codes = StatusCodes::new([Code::DataLoss, Code::Unavailable, Code::Unknown]);
        assert!(codes.contains(Code::Unavailable));
        assert!(!codes.contains(Code::Ok));
        assert_eq!(
            codes.iter().collect::<Vec<_>>(),
            vec![Code::Unknown, Code::Unavailable, Code::DataLoss]
        );
        assert!(!codes.without(Code::Unknown).contains(Code::Unknown));
        assert!(StatusCodes::EMPTY.is_empty());
        for code in ALL {
            assert!(StatusCodes::EMPTY.with(code).contains(code), "{code:?}");
        }
        assert_eq!(format!("{codes:?}").matches(',').count(), 2);
    }
}
