//! Validated user input. Handlers parse raw proto strings into these types first;
//! everything deeper trusts them.

use marquee_kit::Secret;

use marquee_types::invalid;
pub use marquee_types::{InvalidInput, UserId};

/// An email address, trimmed and lowercased so that one mailbox is one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let email = raw.trim().to_lowercase();
        let bad = || invalid("email address is not valid");
        if email.is_empty() || email.len() > Self::MAX_LEN {
            return Err(bad());
        }
        let (local, domain) = email.split_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.len() > 64 || !local.chars().all(is_local_char) {
            return Err(bad());
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || !labels.iter().all(|label| is_domain_label(label)) {
            return Err(bad());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
}

fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A display name: trimmed, 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(invalid("name must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(invalid(format!("name must be at most {} characters", Self::MAX_CHARS)));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("name must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form (`+` then 8 to 15 digits, no leading zero), the form
/// SMS gateways take. Spaces, dashes and parentheses typed between digits are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let compact: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
        let bad = || invalid("phone must be in E.164 form, e.g. +4915112345678");
        let digits = compact.strip_prefix('+').ok_or_else(bad)?;
        if !(8..=15).contains(&digits.len())
            || !digits.chars().all(|c| c.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(bad());
        }
        Ok(Self(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which channels a user is notified on. At least one; SMS needs a phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationPreferences {
    email: bool,
    sms: bool,
}

impl NotificationPreferences {
    /// What a new account starts with.
    pub const EMAIL_ONLY: Self = Self { email: true, sms: false };

    pub fn parse(email: bool, sms: bool, phone: Option<&Phone>) -> Result<Self, InvalidInput> {
        if !email && !sms {
            return Err(invalid("at least one notification channel (email or SMS) must be on"));
        }
        if sms && phone.is_none() {
            return Err(invalid("SMS notifications need a phone number"));
        }
        Ok(Self { email, sms })
    }

    pub fn email(self) -> bool {
        self.email
    }

    pub fn sms(self) -> bool {
        self.sms
    }
}

/// A password chosen at registration. Wrapped in `Secret` so it can never be logged.
pub struct NewPassword(Secret<String>);

impl NewPassword {
    pub const MIN_CHARS: usize = 10;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: String, email: &Email) -> Result<Self, InvalidInput> {
        let chars = raw.chars().count();
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&chars) {
            return Err(invalid(format!(
                "password must be {} to {} characters",
                Self::MIN_CHARS,
                Self::MAX_CHARS
            )));
        }
        if raw.trim().to_lowercase() == email.as_str() {
            return Err(invalid("password must not be the email address"));
        }
        Ok(Self(Secret::new(raw)))
    }

    pub fn into_secret(self) -> Secret<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(Email::parse("  Ada.Lovelace@Example.COM ").unwrap().as_str(), "ada.lovelace@example.com");
        assert_eq!(Email::parse("a+tag@mail.example.org").unwrap().as_str(), "a+tag@mail.example.org");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for raw in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a@@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@-example.com",
            "a@example..com",
            ".a@example.com",
            "a..b@example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} was accepted");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"é".repeat(100)).is_ok());
        assert!(UserName::parse(&"é".repeat(101)).is_err());
    }

    #[test]
    fn passwords_are_bounded_by_characters_and_differ_from_the_email() {
        let email = Email::parse("ada@example.com").unwrap();
        assert!(NewPassword::parse("a".repeat(9), &email).is_err());
        assert!(NewPassword::parse("a".repeat(10), &email).is_ok());
        assert!(NewPassword::parse("ü".repeat(128), &email).is_ok());
        assert!(NewPassword::parse("a".repeat(129), &email).is_err());
        assert!(NewPassword::parse("ADA@example.com".to_owned(), &email).is_err());
    }

    #[test]
    fn phones_are_e164() {
        assert_eq!(Phone::parse("+49 151 1234-5678").unwrap().as_str(), "+4915112345678");
        assert_eq!(Phone::parse("+1 (415) 555-0100").unwrap().as_str(), "+14155550100");
        for raw in ["", "4915112345678", "+0151123456", "+1234567", "+1234567890123456", "+49abc12345678"] {
            assert!(Phone::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn preferences_need_a_channel_and_sms_needs_a_phone() {
        let phone = Phone::parse("+4915112345678").unwrap();
        assert!(NotificationPreferences::parse(false, false, Some(&phone)).is_err());
        assert!(NotificationPreferences::parse(true, true, None).is_err());
        let both = NotificationPreferences::parse(true, true, Some(&phone)).unwrap();
        assert!(both.email() && both.sms());
    }

    #[test]
    fn user_ids_are_uuids() {
        let id = UserId::generate();
        assert_eq!(UserId::parse(&id.to_string()).unwrap(), id);
        assert!(UserId::parse("42").is_err());
    }
}
