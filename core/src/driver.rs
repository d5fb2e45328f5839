//! How a backend crate declares itself to the facade: its URL schemes and its open function
//! (sqlx's `AnyDriver` shape), and the one parser of URL query parameters every backend uses.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::raw::show;
use crate::{Backend, BoxFuture, ConnectOptions, Error, Result};

/// How a driver opens a backend: URL and options in, an opened (not yet initialized) backend out.
pub type OpenFn = fn(String, ConnectOptions) -> BoxFuture<'static, Result<Arc<dyn Backend>>>;

/// One backend's entry in the facade's driver table.
#[derive(Clone, Copy)]
pub struct Driver {
    /// The backend's name: `"memory"`, `"sqlite"`, `"postgres"`, `"valkey"`.
    pub name: &'static str,
    /// The URL schemes it answers (the part of the URL before the first `:`), e.g.
    /// `["postgres", "postgresql"]`.
    pub schemes: &'static [&'static str],
    /// Opens a backend on `url` with `options`: parses the URL and connects, nothing more.
    /// The caller runs `initialize` once afterwards.
    pub open: OpenFn,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("name", &self.name)
            .field("schemes", &self.schemes)
            .finish_non_exhaustive()
    }
}

/// The scheme of `url`: the part before the first `:` (`"sqlite"` for `sqlite::memory:`); empty
/// when the URL has no `:` at all (no driver answers it).
pub fn scheme_of(url: &str) -> &str {
    url.split_once(':').map_or("", |(scheme, _)| scheme)
}

impl Driver {
    /// Whether this driver answers `url`'s scheme.
    pub fn accepts(&self, url: &str) -> bool {
        let scheme = scheme_of(url);
        !scheme.is_empty() && self.schemes.contains(&scheme)
    }
}

/// Picks the driver of `url` from `drivers`, opens the backend and initializes it once.
///
/// An unknown scheme is `InvalidInput` naming the schemes that `drivers` offer.
pub async fn connect_with_drivers(
    drivers: &[Driver],
    url: &str,
    options: ConnectOptions,
) -> Result<Arc<dyn Backend>> {
    let Some(driver) = drivers.iter().find(|d| d.accepts(url)) else {
        return Err(Error::invalid_input(format!(
            "connect: URL scheme {} is unknown or not compiled in; available: {}",
            show(if url.contains(':') {
                scheme_of(url)
            } else {
                url
            }),
            schemes_of(drivers).join(", ")
        )));
    };
    let backend = (driver.open)(url.to_owned(), options).await?;
    backend.initialize().await?;
    Ok(backend)
}

/// Every scheme `drivers` answer, in table order.
pub fn schemes_of(drivers: &[Driver]) -> Vec<&'static str> {
    drivers
        .iter()
        .flat_map(|d| d.schemes.iter().copied())
        .collect()
}

/// The query parameters of a backend URL (`…?name=value&…`), each read at most once by name.
///
/// A backend takes the parameters it knows; [`UrlParams::finish`] then rejects whatever is left
/// with `InvalidInput` naming it and the parameters this backend knows. The same name twice is
/// `InvalidInput` at [`UrlParams::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParams {
    url: String,
    values: BTreeMap<String, String>,
    known: Vec<&'static str>,
}

impl UrlParams {
    /// Splits `url` at its first `?` into the base and the parameters.
    pub fn parse(url: &str) -> Result<(String, UrlParams)> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut values = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if values.insert(name.to_owned(), value.to_owned()).is_some() {
                return Err(Error::invalid_input(format!(
                    "connect: URL parameter {} is given twice in {}",
                    show(name),
                    show(url)
                )));
            }
        }
        Ok((
            base.to_owned(),
            UrlParams {
                url: url.to_owned(),
                values,
                known: Vec::new(),
            },
        ))
    }

    /// The raw value of parameter `name`, if given (it then counts as read).
    pub fn take(&mut self, name: &'static str) -> Option<String> {
        self.known.push(name);
        self.values.remove(name)
    }

    /// A whole number in `min..=max`.
    pub fn take_u64(&mut self, name: &'static str, min: u64, max: u64) -> Result<Option<u64>> {
        let Some(text) = self.take(name) else {
            return Ok(None);
        };
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(Error::invalid_input(format!(
                "connect: URL parameter {name}={} is not a whole number in {min}..={max}",
                show(&text)
            ))),
        }
    }

    /// A duration in milliseconds, at least 1 ms (parameters named `…_ms`).
    pub fn take_ms(&mut self, name: &'static str) -> Result<Option<Duration>> {
        Ok(self
            .take_u64(name, 1, crate::MAX_AMOUNT)?
            .map(Duration::from_millis))
    }

    /// One of `choices`, as given.
    pub fn take_choice(
        &mut self,
        name: &'static str,
        choices: &'static [&'static str],
    ) -> Result<Option<&'static str>> {
        let Some(text) = self.take(name) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| **c == text)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "connect: URL parameter {name}={} is not one of {}",
                    show(&text),
                    choices.join(", ")
                ))
            })
    }

    /// Every parameter not read yet, as `name=value` pairs in name order (for backends that pass
    /// the rest on to their driver, such as PostgreSQL's libpq parameters).
    pub fn take_rest(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.values).into_iter().collect()
    }

    /// `InvalidInput` naming the first parameter nobody read, and the known ones.
    pub fn finish(self) -> Result<()> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => Err(Error::invalid_input(format!(
                "connect: URL parameter {} of {} is unknown; known parameters: {}",
                show(name),
                show(&self.url),
                if self.known.is_empty() {
                    "none".to_owned()
                } else {
                    self.known.join(", ")
                }
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn known_parameters_are_read_and_unknown_ones_rejected() {
        let (base, mut params) =
            UrlParams::parse("sqlite:///tmp/x.db?busy_timeout_ms=50&mode=full&typo=1").unwrap();
        assert_eq!(base, "sqlite:///tmp/x.db");
        assert_eq!(
            params.take_ms("busy_timeout_ms").unwrap(),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            params.take_choice("mode", &["full", "normal"]).unwrap(),
            Some("full")
        );
        assert_eq!(params.take_u64("absent", 0, 5).unwrap(), None);
        let error = params.finish().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn bad_values_and_repeats_are_invalid_input() {
        let (_, mut p) = UrlParams::parse("x://h?n=7").unwrap();
        assert_eq!(
            p.take_u64("n", 0, 5).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let (_, mut p) = UrlParams::parse("x://h?n=0").unwrap();
        assert_eq!(p.take_ms("n").unwrap_err().kind(), ErrorKind::InvalidInput);
        let (_, mut p) = UrlParams::parse("x://h?m=fast").unwrap();
        assert_eq!(
            p.take_choice("m", &["full"]).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            UrlParams::parse("x://h?a=1&a=2").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let (_, mut p) = UrlParams::parse("x://h?a=1&b=2").unwrap();
        assert_eq!(p.take("a").as_deref(), Some("1"));
        assert_eq!(p.take_rest(), vec![("b".to_owned(), "2".to_owned())]);
        p.finish().unwrap();
    }

    #[test]
    fn schemes_are_the_part_before_the_first_colon() {
        assert_eq!(scheme_of("sqlite::memory:"), "sqlite");
        assert_eq!(scheme_of("valkey+cluster://a:1,b:2"), "valkey+cluster");
        assert_eq!(scheme_of("nocolon"), "");
    }
}
