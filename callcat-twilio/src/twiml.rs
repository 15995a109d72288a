//! A small typed TwiML builder with correct XML escaping of text and attributes.
//!
//! ```
//! use callcat_twilio::twiml::{Gather, Response, Say};
//! let xml = Response::new()
//!     .say(Say::new("Hello <friend> & welcome"))
//!     .gather(Gather::speech("https://x.example/g?a=1&b=2").say(Say::new("How are you?")))
//!     .hangup()
//!     .to_xml();
//! assert!(xml.contains("Hello &lt;friend&gt; &amp; welcome"));
//! assert!(xml.contains(r#"action="https://x.example/g?a=1&amp;b=2""#));
//! ```

/// Escapes text content (`<`, `>`, `&`, and quotes too, so the same function is
/// safe everywhere).
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// One XML element.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    fn new(name: &'static str) -> Self {
        Element {
            name,
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    fn attr(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attrs.push((name, value.into()));
        self
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&escape_xml(v));
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write(out),
                Node::Text(t) => out.push_str(&escape_xml(t)),
            }
        }
        out.push_str("</");
        out.push_str(self.name);
        out.push('>');
    }
}

/// `<Say>`: text read out with text-to-speech.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Say {
    text: String,
    voice: Option<String>,
    language: Option<String>,
}

impl Say {
    /// Says `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Say {
            text: text.into(),
            voice: None,
            language: None,
        }
    }

    /// The voice (`alice`, `Polly.Joanna`, ...).
    pub fn voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }

    /// The language (`en-US`, ...).
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    fn element(&self) -> Element {
        let mut e = Element::new("Say");
        if let Some(v) = &self.voice {
            e = e.attr("voice", v);
        }
        if let Some(l) = &self.language {
            e = e.attr("language", l);
        }
        e.children.push(Node::Text(self.text.clone()));
        e
    }
}

/// `<Gather>`: collects the caller's input and posts it to `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather {
    input: &'static str,
    action: String,
    speech_timeout: String,
    timeout: Option<u32>,
    language: Option<String>,
    action_on_empty_result: bool,
    prompts: Vec<Say>,
}

impl Gather {
    /// Gathers speech (`input="speech"`), posting the result to `action`.
    pub fn speech(action: impl Into<String>) -> Self {
        Gather {
            input: "speech",
            action: action.into(),
            speech_timeout: "auto".into(),
            timeout: None,
            language: None,
            action_on_empty_result: false,
            prompts: Vec::new(),
        }
    }

    /// Seconds of silence that end speech (`auto` by default).
    pub fn speech_timeout(mut self, seconds: u32) -> Self {
        self.speech_timeout = seconds.to_string();
        self
    }

    /// Seconds to wait for the caller to start (Twilio's default is 5).
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }

    /// The speech recognition language (`en-US`, ...).
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Posts to `action` even when nothing was said.
    pub fn action_on_empty_result(mut self, on: bool) -> Self {
        self.action_on_empty_result = on;
        self
    }

    /// A prompt said while gathering.
    pub fn say(mut self, say: Say) -> Self {
        self.prompts.push(say);
        self
    }

    fn element(&self) -> Element {
        let mut e = Element::new("Gather")
            .attr("input", self.input)
            .attr("action", &self.action)
            .attr("method", "POST")
            .attr("speechTimeout", &self.speech_timeout);
        if let Some(t) = self.timeout {
            e = e.attr("timeout", t.to_string());
        }
        if let Some(l) = &self.language {
            e = e.attr("language", l);
        }
        if self.action_on_empty_result {
            e = e.attr("actionOnEmptyResult", "true");
        }
        e.children = self
            .prompts
            .iter()
            .map(|s| Node::Element(s.element()))
            .collect();
        e
    }
}

/// `<Start><Transcription>`: real-time transcription posted to a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcription {
    status_callback_url: String,
    track: Option<String>,
    language_code: Option<String>,
    partial_results: bool,
}

impl Transcription {
    /// Transcribes the call, posting events to `status_callback_url`.
    pub fn new(status_callback_url: impl Into<String>) -> Self {
        Transcription {
            status_callback_url: status_callback_url.into(),
            track: None,
            language_code: None,
            partial_results: false,
        }
    }

    /// `inbound_track`, `outbound_track` or `both_tracks` (Twilio's default).
    pub fn track(mut self, track: impl Into<String>) -> Self {
        self.track = Some(track.into());
        self
    }

    /// The language (`en-US`, ...).
    pub fn language_code(mut self, code: impl Into<String>) -> Self {
        self.language_code = Some(code.into());
        self
    }

    /// Also send partial (interim) results.
    pub fn partial_results(mut self, on: bool) -> Self {
        self.partial_results = on;
        self
    }

    fn element(&self) -> Element {
        let mut t = Element::new("Transcription")
            .attr("statusCallbackUrl", &self.status_callback_url)
            .attr("statusCallbackMethod", "POST");
        if let Some(track) = &self.track {
            t = t.attr("track", track);
        }
        if let Some(l) = &self.language_code {
            t = t.attr("languageCode", l);
        }
        if self.partial_results {
            t = t.attr("partialResults", "true");
        }
        let mut start = Element::new("Start");
        start.children.push(Node::Element(t));
        start
    }
}

/// A `<Response>` document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    verbs: Vec<Element>,
}

impl Response {
    /// An empty response.
    pub fn new() -> Self {
        Response::default()
    }

    /// Appends `<Say>`.
    pub fn say(mut self, say: Say) -> Self {
        self.verbs.push(say.element());
        self
    }

    /// Appends `<Gather>`.
    pub fn gather(mut self, gather: Gather) -> Self {
        self.verbs.push(gather.element());
        self
    }

    /// Appends `<Start><Transcription .../></Start>`.
    pub fn start_transcription(mut self, transcription: Transcription) -> Self {
        self.verbs.push(transcription.element());
        self
    }

    /// Appends `<Pause length="seconds"/>`.
    pub fn pause(mut self, seconds: u32) -> Self {
        self.verbs
            .push(Element::new("Pause").attr("length", seconds.to_string()));
        self
    }

    /// Appends `<Redirect method="POST">url</Redirect>`.
    pub fn redirect(mut self, url: impl Into<String>) -> Self {
        let mut e = Element::new("Redirect").attr("method", "POST");
        e.children.push(Node::Text(url.into()));
        self.verbs.push(e);
        self
    }

    /// Appends `<Hangup/>`.
    pub fn hangup(mut self) -> Self {
        self.verbs.push(Element::new("Hangup"));
        self
    }

    /// The document, with an XML declaration.
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        let mut root = Element::new("Response");
        root.children = self.verbs.iter().cloned().map(Node::Element).collect();
        if root.children.is_empty() {
            out.push_str("<Response></Response>");
        } else {
            root.write(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_all_five_and_drops_control_characters() {
        assert_eq!(
            escape_xml("<a href='x'>\"&\"</a>\u{1}"),
            "&lt;a href=&apos;x&apos;&gt;&quot;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn empty_response_is_a_document() {
        assert_eq!(
            Response::new().to_xml(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>"
        );
    }
}
