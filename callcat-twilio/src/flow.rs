//! The TwiML conversation flow (seed 002): a greeting, N spoken prompts each
//! answered by speech, a closing. Framework-free: the server calls
//! [`ConversationFlow::render_step`] for the TwiML path and
//! [`ConversationFlow::parse_gather`] for the gather path.
//!
//! Steps: step `k < N` says the prompt `k` inside `<Gather input="speech">`
//! (step 0 starts with the greeting, and with `<Start><Transcription>` when
//! real-time transcription is on), then redirects to step `k + 1` if nothing was
//! said. The gather callback for step `k` answers with the TwiML of step
//! `k + 1`. Step `N` says the closing and hangs up.

use callcat_core::{Call, CallId, Error, Result, SpeakerRole, TranscriptSegment};
use serde_json::Value;

use crate::SOURCE;
use crate::config::{CallbackUrls, STEP_PARAM};
use crate::signature::query_param;
use crate::twiml::{Gather, Response, Say, Transcription};
use crate::webhook::{FormFields, TwilioWebhookError};

/// The call metadata key whose object configures the flow.
pub const FLOW_METADATA_KEY: &str = "twilio_flow";
/// Seed 002's greeting.
pub const DEFAULT_GREETING: &str = "Hello. This is your daily reflection call.";
/// Seed 002's prompts.
pub const DEFAULT_PROMPTS: [&str; 2] = [
    "What are you grateful for today?",
    "What is one thing you learned today?",
];
/// Seed 002's closing.
pub const DEFAULT_CLOSING: &str = "Thank you for completing your reflection. Goodbye.";
/// At most this many prompts.
pub const MAX_PROMPTS: usize = 50;
/// At most this many characters in one spoken text (Twilio's `<Say>` limit).
pub const MAX_TEXT_CHARS: usize = 4096;

/// What a call says and asks.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationFlow {
    /// Said first.
    pub greeting: String,
    /// Asked in order, each answered by speech.
    pub prompts: Vec<String>,
    /// Said last, before hanging up.
    pub closing: String,
    /// The `<Say>` voice (from the call's `voice`).
    pub voice: Option<String>,
    /// Language for speech and recognition (from the call's `language`).
    pub language: Option<String>,
    /// Adds `<Start><Transcription>` at step 0.
    pub realtime_transcription: bool,
    /// Asks for partial transcription results too.
    pub partial_results: bool,
    /// Seconds of silence that end an answer (`None`: Twilio's `auto`).
    pub speech_timeout: Option<u32>,
}

impl Default for ConversationFlow {
    /// Seed 002's reflection call, without real-time transcription.
    fn default() -> Self {
        ConversationFlow {
            greeting: DEFAULT_GREETING.into(),
            prompts: DEFAULT_PROMPTS.iter().map(|p| p.to_string()).collect(),
            closing: DEFAULT_CLOSING.into(),
            voice: None,
            language: None,
            realtime_transcription: false,
            partial_results: false,
            speech_timeout: None,
        }
    }
}

/// One answered prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct GatherTurn {
    /// Twilio's call SID.
    pub call_sid: String,
    /// Which prompt was answered (0-based).
    pub step: usize,
    /// The prompt, as an agent segment.
    pub prompt: TranscriptSegment,
    /// The answer (`SpeechResult`), as a user segment; `None` when nothing was
    /// recognized.
    pub answer: Option<TranscriptSegment>,
    /// Twilio's recognition confidence, 0..=1.
    pub confidence: Option<f64>,
}

impl GatherTurn {
    /// The step whose TwiML answers this callback.
    pub fn next_step(&self) -> usize {
        self.step + 1
    }

    /// The prompt and the answer, in order, to append to the transcript.
    pub fn segments(&self) -> Vec<TranscriptSegment> {
        std::iter::once(self.prompt.clone())
            .chain(self.answer.clone())
            .collect()
    }
}

impl ConversationFlow {
    /// The flow for `call`: seed 002's defaults, the call's `voice` and
    /// `language`, overridden by the call's `metadata.twilio_flow` object
    /// (`greeting`, `prompts` (array of strings), `closing`,
    /// `realtime_transcription`, `partial_results`, `speech_timeout`).
    pub fn for_call(call: &Call) -> Result<Self> {
        let mut flow = ConversationFlow {
            voice: call.voice.clone(),
            language: call.language.clone(),
            ..ConversationFlow::default()
        };
        if let Some(cfg) = call.metadata.get(FLOW_METADATA_KEY) {
            let Value::Object(cfg) = cfg else {
                return Err(bad(FLOW_METADATA_KEY, "must be an object"));
            };
            for (key, value) in cfg {
                match key.as_str() {
                    "greeting" => flow.greeting = string(value, "greeting")?,
                    "closing" => flow.closing = string(value, "closing")?,
                    "prompts" => {
                        let Value::Array(items) = value else {
                            return Err(bad("prompts", "must be an array of strings"));
                        };
                        flow.prompts = items
                            .iter()
                            .map(|v| string(v, "prompts"))
                            .collect::<Result<_>>()?;
                    }
                    "realtime_transcription" => {
                        flow.realtime_transcription = boolean(value, "realtime_transcription")?
                    }
                    "partial_results" => flow.partial_results = boolean(value, "partial_results")?,
                    "speech_timeout" => {
                        flow.speech_timeout = Some(
                            value
                                .as_u64()
                                .and_then(|n| u32::try_from(n).ok())
                                .filter(|n| (1..=60).contains(n))
                                .ok_or_else(|| bad("speech_timeout", "must be 1..=60 seconds"))?,
                        )
                    }
                    other => return Err(bad(other, "unknown flow setting")),
                }
            }
        }
        flow.validate()?;
        Ok(flow)
    }

    /// Checks the texts: non-empty, at most [`MAX_TEXT_CHARS`], 1..=[`MAX_PROMPTS`] prompts.
    pub fn validate(&self) -> Result<()> {
        if self.prompts.is_empty() || self.prompts.len() > MAX_PROMPTS {
            return Err(bad("prompts", format!("need 1..={MAX_PROMPTS} prompts")));
        }
        for (field, text) in std::iter::once(("greeting", &self.greeting))
            .chain(std::iter::once(("closing", &self.closing)))
            .chain(self.prompts.iter().map(|p| ("prompts", p)))
        {
            if text.trim().is_empty() || text.chars().count() > MAX_TEXT_CHARS {
                return Err(bad(
                    field,
                    format!("must be 1..={MAX_TEXT_CHARS} characters and not blank"),
                ));
            }
        }
        Ok(())
    }

    /// The number of steps: one per prompt, plus the closing.
    pub fn steps(&self) -> usize {
        self.prompts.len() + 1
    }

    fn say(&self, text: &str) -> Say {
        let mut s = Say::new(text);
        if let Some(v) = &self.voice {
            s = s.voice(v);
        }
        if let Some(l) = &self.language {
            s = s.language(l);
        }
        s
    }

    /// The TwiML document for step `step` of call `call_id`'s flow.
    pub fn render_step(&self, urls: &CallbackUrls, call_id: CallId, step: usize) -> Result<String> {
        self.validate()?;
        if step > self.prompts.len() {
            return Err(bad(
                STEP_PARAM,
                format!("the flow has steps 0..={}", self.prompts.len()),
            ));
        }
        let mut resp = Response::new();
        if step == self.prompts.len() {
            return Ok(resp.say(self.say(&self.closing)).hangup().to_xml());
        }
        if step == 0 {
            if self.realtime_transcription {
                let mut t = Transcription::new(urls.transcription(call_id))
                    .partial_results(self.partial_results);
                if let Some(l) = &self.language {
                    t = t.language_code(l);
                }
                resp = resp.start_transcription(t);
            }
            resp = resp.say(self.say(&self.greeting));
        }
        let mut gather =
            Gather::speech(urls.gather(call_id, step)).say(self.say(&self.prompts[step]));
        if let Some(l) = &self.language {
            gather = gather.language(l);
        }
        if let Some(t) = self.speech_timeout {
            gather = gather.speech_timeout(t);
        }
        Ok(resp
            .gather(gather)
            .redirect(urls.twiml(call_id, step + 1))
            .to_xml())
    }

    /// Parses a (verified) gather callback: `url` is the request URL (its
    /// `step` query parameter says which prompt was answered), `form` the body.
    pub fn parse_gather(
        &self,
        url: &str,
        form: &FormFields,
    ) -> Result<GatherTurn, TwilioWebhookError> {
        let step = step_from_url(url)?;
        let Some(prompt) = self.prompts.get(step) else {
            return Err(TwilioWebhookError::Field {
                field: STEP_PARAM,
                message: format!("the flow has {} prompts", self.prompts.len()),
            });
        };
        let call_sid = form.require("CallSid")?.to_string();
        let answer = form
            .get("SpeechResult")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| TranscriptSegment::new(SpeakerRole::User, s));
        let confidence = match form.get("Confidence") {
            None => None,
            Some(c) => Some(
                c.parse::<f64>()
                    .ok()
                    .filter(|c| (0.0..=1.0).contains(c))
                    .ok_or(TwilioWebhookError::Field {
                        field: "Confidence",
                        message: "not a number in 0..=1".into(),
                    })?,
            ),
        };
        Ok(GatherTurn {
            call_sid,
            step,
            prompt: TranscriptSegment::new(SpeakerRole::Agent, prompt.clone()),
            answer,
            confidence,
        })
    }

    /// The greeting as an agent segment (said before the first prompt).
    pub fn greeting_segment(&self) -> TranscriptSegment {
        TranscriptSegment::new(SpeakerRole::Agent, self.greeting.clone())
    }

    /// The closing as an agent segment.
    pub fn closing_segment(&self) -> TranscriptSegment {
        TranscriptSegment::new(SpeakerRole::Agent, self.closing.clone())
    }
}

/// The `step` query parameter of a TwiML or gather URL (0 when absent).
pub fn step_from_url(url: &str) -> Result<usize, TwilioWebhookError> {
    match query_param(url, STEP_PARAM) {
        None => Ok(0),
        Some(s) => s.parse().map_err(|_| TwilioWebhookError::Field {
            field: STEP_PARAM,
            message: "not a step number".into(),
        }),
    }
}

/// Renders the TwiML for step `step` of `call`'s flow ([`ConversationFlow::for_call`]).
pub fn render_call_twiml(call: &Call, urls: &CallbackUrls, step: usize) -> Result<String> {
    ConversationFlow::for_call(call)?.render_step(urls, call.id, step)
}

fn bad(field: &str, message: impl Into<String>) -> Error {
    Error::validation(format!("{FLOW_METADATA_KEY}.{field}"), message.into())
        .with_source_name(SOURCE)
}

fn string(v: &Value, field: &str) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| bad(field, "must be a string"))
}

fn boolean(v: &Value, field: &str) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| bad(field, "must be true or false"))
}
