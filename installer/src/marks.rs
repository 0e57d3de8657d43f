//! Node labels and taints as a sealer Clusterfile writes them (`spec.hosts[].labels` and
//! `spec.hosts[].taints`), checked on the admin host and turned into `kubectl label` / `kubectl
//! taint` on the first master once the host's Node exists.
//!
//! Taints follow sealer's (and kubectl's) syntax: `key=value:Effect`, `key:Effect` and
//! `key=:Effect` add or update a taint; `key:Effect-` removes that taint and `key-` every taint
//! of the key. Effects are `NoSchedule`, `PreferNoSchedule` and `NoExecute`.

/// The effects a taint may have.
pub const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MarkError {
    #[error(
        "{text:?} is not a taint: write key=value:Effect, key:Effect, key:Effect- (remove) or \
         key- (remove every taint of the key), with Effect one of NoSchedule, \
         PreferNoSchedule, NoExecute"
    )]
    BadTaint { text: String },
    #[error(
        "{text:?} is not a label {part}: use at most 63 letters, digits, `-`, `_` and `.`, \
         starting and ending with a letter or digit (a key may have a DNS prefix/)"
    )]
    BadLabel { text: String, part: &'static str },
}

/// One taint change on a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taint {
    /// Add the taint, or update its value (`kubectl taint --overwrite`).
    Set {
        key: String,
        value: String,
        effect: String,
    },
    /// Remove the taint of this key and effect.
    Remove { key: String, effect: String },
    /// Remove every taint of this key.
    RemoveKey { key: String },
}

impl Taint {
    pub fn parse(text: &str) -> Result<Taint, MarkError> {
        let bad = || MarkError::BadTaint { text: text.into() };
        let t = text.trim();
        let effect_ok = |e: &str| EFFECTS.contains(&e);
        let key_ok = |k: &str| check_key(k).is_ok();
        if let Some(key) = t.strip_suffix('-').filter(|k| !k.contains([':', '='])) {
            return if key_ok(key) {
                Ok(Taint::RemoveKey { key: key.into() })
            } else {
                Err(bad())
            };
        }
        let (left, effect) = t.rsplit_once(':').ok_or_else(bad)?;
        if let Some(effect) = effect.strip_suffix('-') {
            let key = left.strip_suffix('=').unwrap_or(left);
            return if key_ok(key) && effect_ok(effect) && !key.contains('=') {
                Ok(Taint::Remove {
                    key: key.into(),
                    effect: effect.into(),
                })
            } else {
                Err(bad())
            };
        }
        let (key, value) = left.split_once('=').unwrap_or((left, ""));
        if !key_ok(key) || !effect_ok(effect) || (!value.is_empty() && check_value(value).is_err())
        {
            return Err(bad());
        }
        Ok(Taint::Set {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        })
    }

    /// The argument of `kubectl taint node NAME ARG`.
    pub fn kubectl_arg(&self) -> String {
        match self {
            Taint::Set { key, value, effect } if value.is_empty() => format!("{key}:{effect}"),
            Taint::Set { key, value, effect } => format!("{key}={value}:{effect}"),
            Taint::Remove { key, effect } => format!("{key}:{effect}-"),
            Taint::RemoveKey { key } => format!("{key}-"),
        }
    }
}

/// A label value: empty, or a name part.
pub fn check_value(v: &str) -> Result<(), MarkError> {
    if v.is_empty() || name_part(v) {
        Ok(())
    } else {
        Err(MarkError::BadLabel {
            text: v.into(),
            part: "value",
        })
    }
}

/// A label or taint key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn check_key(k: &str) -> Result<(), MarkError> {
    let bad = || MarkError::BadLabel {
        text: k.into(),
        part: "key",
    };
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if !name_part(name) {
        return Err(bad());
    }
    if let Some(p) = prefix {
        let dns = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(dns) {
            return Err(bad());
        }
    }
    Ok(())
}

fn name_part(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_sealer_taints_parses() {
        let set = |k: &str, v: &str, e: &str| Taint::Set {
            key: k.into(),
            value: v.into(),
            effect: e.into(),
        };
        assert_eq!(
            Taint::parse("key1=value1:NoSchedule"),
            Ok(set("key1", "value1", "NoSchedule"))
        );
        assert_eq!(
            Taint::parse("key1:NoExecute"),
            Ok(set("key1", "", "NoExecute"))
        );
        assert_eq!(
            Taint::parse("node-role.kubernetes.io/master=:NoSchedule"),
            Ok(set("node-role.kubernetes.io/master", "", "NoSchedule"))
        );
        assert_eq!(
            Taint::parse("key1:NoSchedule-"),
            Ok(Taint::Remove {
                key: "key1".into(),
                effect: "NoSchedule".into()
            })
        );
        assert_eq!(
            Taint::parse("node-role.kubernetes.io/master-"),
            Ok(Taint::RemoveKey {
                key: "node-role.kubernetes.io/master".into()
            })
        );
        for bad in [
            "key1",
            "key1=v:Sometimes",
            "=v:NoSchedule",
            "a b:NoSchedule",
            "",
        ] {
            assert!(Taint::parse(bad).is_err(), "{bad}");
        }
        let e = Taint::parse("key1=v").unwrap_err().to_string();
        assert!(
            e.contains("key=value:Effect") && e.contains("NoExecute"),
            "{e}"
        );
    }

    #[test]
    fn kubectl_gets_the_taint_back_in_its_own_syntax() {
        for t in ["a=b:NoSchedule", "a:NoExecute", "a:NoSchedule-", "a-"] {
            assert_eq!(Taint::parse(t).unwrap().kubectl_arg(), t);
        }
        assert_eq!(
            Taint::parse("a=:NoSchedule").unwrap().kubectl_arg(),
            "a:NoSchedule"
        );
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        assert!(check_key("disk").is_ok());
        assert!(check_key("example.com/disk_type").is_ok());
        assert!(check_key("Example.com/disk").is_err());
        assert!(check_key("-disk").is_err());
        assert!(check_key(&"a".repeat(64)).is_err());
        assert!(check_value("").is_ok());
        assert!(check_value("ssd").is_ok());
        assert!(check_value("a b").is_err());
    }
}
