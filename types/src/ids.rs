//! Entity ids: UUIDs (v7 for the ones Marquee generates, so indexes grow at their
//! right edge), written in their hyphenated lowercase form.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::{InvalidInput, invalid};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// A UUID, exactly (no surrounding space).
            pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
                Uuid::parse_str(raw).map(Self).map_err(|_| invalid(concat!($what, " must be a UUID")))
            }

            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidInput;

            fn from_str(raw: &str) -> Result<Self, InvalidInput> {
                Self::parse(raw)
            }
        }
    };
}

uuid_id!(
    /// A customer, staff member or admin (the user service's id; a token's `sub`).
    UserId,
    "user id"
);
uuid_id!(MovieId, "movie id");
uuid_id!(CinemaId, "cinema id");
uuid_id!(ScreenId, "screen id");
uuid_id!(ShowtimeId, "showtime id");
uuid_id!(
    /// A booking; also the id cinema holds seats under and payment charges for.
    BookingId,
    "booking id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_exact_uuids() {
        let raw = "0190f3c2-7a4e-7c3b-9f1e-2b8c4d5e6f70";
        assert_eq!(ShowtimeId::parse(raw).unwrap().to_string(), raw);
        for bad in ["", " 0190f3c2-7a4e-7c3b-9f1e-2b8c4d5e6f70", "65f1c2a9e4b0a1b2c3d4e5f6", "{\"$ne\":1}"] {
            let error = ShowtimeId::parse(bad).unwrap_err();
            assert_eq!(error.0, "showtime id must be a UUID", "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_time_ordered() {
        let (first, second) = (BookingId::generate(), BookingId::generate());
        assert!(first < second);
        assert_eq!(first.as_uuid().get_version_num(), 7);
    }
}
