//! Instrumentation with the `tracing` crate (feature `tracing`, off by
//! default): the crate-internal macros every layer calls to open a span or
//! emit an event. The bottom layer: it imports nothing from the crate.
//!
//! Invariants: with the feature on, each macro expands to the `tracing`
//! macro of the same job, with target `annal`; with it off, each expands to
//! nothing (or to a zero-sized value), so no field expression is evaluated,
//! no clock is read and nothing is allocated. Anything computed only for a
//! trace is therefore written inside a macro, never bound outside one
//! (which would also be an unused variable when off).
//!
//! * `span!(LEVEL, "name", field = value, later = Empty, ...)`: a span,
//!   entered until the value returned drops (bind it to `_span`). Fields
//!   known only later are declared with `Empty` and filled with
//!   `record!`.
//! * `record!(span, field = value, ...)`: fill fields of a span; the
//!   values are not computed for a span no subscriber wants.
//! * `event!(LEVEL, field = value, ..., "message")`: an event.
//! * `value!(expr)`: `expr` when on, `()` when off: a value kept only for a
//!   later `record!` (bind it to a name starting with `_`).
//! * `when! { statements }`: statements that exist only for tracing.
//!
//! Span names start with `annal.`; what each carries is listed in the
//! README's "Tracing" section.

#[cfg(feature = "tracing")]
pub(crate) use tracing::field::Empty;

/// What `span!` returns when the feature is off: nothing to enter or drop.
#[cfg(not(feature = "tracing"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entered;

/// Open and enter a span: `span!(INFO, "annal.open", dir = %dir.display())`.
#[cfg(feature = "tracing")]
macro_rules! span {
    ($lvl:ident, $name:literal $($fields:tt)*) => {
        ::tracing::span!(target: "annal", ::tracing::Level::$lvl, $name $($fields)*).entered()
    };
}

/// Open and enter a span (feature `tracing` off: nothing).
#[cfg(not(feature = "tracing"))]
macro_rules! span {
    ($($t:tt)*) => {
        $crate::trace::Entered
    };
}

/// Fill fields of a span declared with `Empty`.
#[cfg(feature = "tracing")]
macro_rules! record {
    ($span:expr, $($field:ident = $value:expr),+ $(,)?) => {{
        let span = &$span;
        // A span no subscriber wants: its values are not computed.
        if !span.is_disabled() {
            $(span.record(stringify!($field), $value);)+
        }
    }};
}

/// Fill fields of a span (feature `tracing` off: nothing).
#[cfg(not(feature = "tracing"))]
macro_rules! record {
    ($($t:tt)*) => {};
}

/// Emit an event: `event!(WARN, file = %path.display(), "what happened")`.
#[cfg(feature = "tracing")]
macro_rules! event {
    ($lvl:ident, $($t:tt)*) => {
        ::tracing::event!(target: "annal", ::tracing::Level::$lvl, $($t)*)
    };
}

/// Emit an event (feature `tracing` off: nothing).
#[cfg(not(feature = "tracing"))]
macro_rules! event {
    ($($t:tt)*) => {};
}

/// A value kept for a later `record!`: the expression when on, `()` when off.
#[cfg(feature = "tracing")]
macro_rules! value {
    ($e:expr) => {
        $e
    };
}

/// A value kept for a later `record!` (feature `tracing` off: `()`).
#[cfg(not(feature = "tracing"))]
macro_rules! value {
    ($e:expr) => {
        ()
    };
}

/// Statements that exist only for tracing.
#[cfg(feature = "tracing")]
macro_rules! when {
    ($($t:tt)*) => {
        $($t)*
    };
}

/// Statements that exist only for tracing (feature `tracing` off: none).
#[cfg(not(feature = "tracing"))]
macro_rules! when {
    ($($t:tt)*) => {};
}

pub(crate) use {event, record, span, value, when};
