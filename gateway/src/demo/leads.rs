//! Simulated leads: a handful of prospects of a lead-generation agency writing in over
//! WhatsApp, two by email and one on LinkedIn. Every few seconds one of them sends the next line of their
//! little script, and when an agent answers one of them (the sandbox or the SMTP sink sees
//! the send), that lead often writes back. Everything goes through the same signed webhook
//! paths as real traffic: [`WebhookSender`] for Meta's, [`Mailer`] for raw email.

use std::ops::RangeInclusive;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::sandbox::{SentMessage, WebhookSender};
use super::smtp_sink::Received;
use super::unipile::{LinkedinSent, LinkedinWriter};

/// A prospect and what they will say.
#[derive(Debug)]
pub struct Lead {
    pub name: &'static str,
    /// WhatsApp id: the phone number in international format, without `+`.
    pub wa_id: &'static str,
    /// Writes by email from this address instead of on WhatsApp.
    pub email: Option<&'static str>,
    /// Writes on LinkedIn as this member (provider id) instead.
    pub linkedin: Option<&'static str>,
    /// Unprompted lines, sent in order.
    pub script: &'static [&'static str],
    /// Answers to an agent's message, used in turn.
    pub replies: &'static [&'static str],
}

pub const LEADS: [Lead; 7] = [
    Lead {
        name: "Ana Lima",
        wa_id: "5511987654321",
        email: None,
        linkedin: None,
        script: &[
            "Hi! I saw your ad about lead generation for clinics. Is the offer still valid?",
            "We're a dental clinic with 3 locations in São Paulo.",
            "What does the monthly retainer cost?",
            "Does that include ad spend or is that separate?",
            "Ok, makes sense. Can you send me a proposal?",
        ],
        replies: &[
            "Thanks! That's helpful.",
            "Perfect, I'll share it with my partner and get back to you.",
            "Could we do a quick call tomorrow morning?",
        ],
    },
    Lead {
        name: "James Carter",
        wa_id: "14155550123",
        email: None,
        linkedin: None,
        script: &[
            "Hey, got your email about the outbound campaign audit.",
            "We're doing about 40 demos a month and want to double that.",
            "Can we book a call this week?",
            "Thursday afternoon works best, Pacific time.",
            "Who else from your team will be on the call?",
        ],
        replies: &[
            "Sounds good, see you then 👍",
            "Can you send the invite to my work email?",
            "Great, talk soon.",
        ],
    },
    Lead {
        name: "Priya Nair",
        wa_id: "919820012345",
        email: Some("priya@launchpad-saas.example"),
        linkedin: None,
        script: &[
            "Hello, we need help with Google Ads for our SaaS launch.",
            "Budget is around $5k/month to start.",
            "Do you have experience with B2B SaaS in India and the US?",
            "Could you share a case study?",
        ],
        replies: &[
            "Thanks, reading it now.",
            "Impressive numbers. What would onboarding look like?",
            "Let me loop in our CMO.",
        ],
    },
    Lead {
        name: "Lukas Becker",
        wa_id: "4915112345678",
        email: Some("lukas.becker@sensorwerk.example"),
        linkedin: None,
        script: &[
            "Hi, is this the agency that does LinkedIn outreach?",
            "We sell industrial sensors, mostly to manufacturers in the DACH region.",
            "How many meetings per month can we realistically expect?",
            "What's the minimum contract length?",
        ],
        replies: &[
            "Okay. Three months is fine for a pilot.",
            "Can you send the contract over?",
            "Danke! I'll review it today.",
        ],
    },
    Lead {
        name: "Sofia Rossi",
        wa_id: "393331234567",
        email: None,
        linkedin: None,
        script: &[
            "Buongiorno! A friend recommended you for lead gen.",
            "We run a boutique hotel group and want more direct bookings.",
            "Do you also handle the landing pages, or just the ads?",
            "What results did you get for similar clients?",
        ],
        replies: &[
            "Molto bene, that's exactly what we need.",
            "Can we start before the summer season?",
            "Please send me the next steps.",
        ],
    },
    Lead {
        name: "Tom Okafor",
        wa_id: "2348031234567",
        email: None,
        linkedin: None,
        script: &[
            "Hi, I filled in the form on your website yesterday.",
            "We're a fintech startup looking for our first 100 business customers.",
            "Is there a setup fee?",
            "Can I pay monthly, or is it upfront?",
        ],
        replies: &[
            "Great, that works for us.",
            "I'm free Monday at 10am WAT for a call.",
            "Thanks for the quick response!",
        ],
    },
    Lead {
        name: "Mei Chen",
        wa_id: "6591234567",
        email: None,
        linkedin: Some("ACoAADEMOMEICHEN"),
        script: &[
            "Hi! Loved your post on outbound for B2B marketplaces.",
            "I lead growth at a logistics marketplace, 40 people.",
            "Do you run LinkedIn campaigns for founders' personal profiles too?",
            "What would a first month look like?",
        ],
        replies: &[
            "That sounds reasonable. Who would write the posts?",
            "Ok, happy to try a pilot.",
            "Thanks! Let's talk next week.",
        ],
    },
];

/// What leads say once their script is done, so a long-running demo keeps moving.
const FOLLOW_UPS: [&str; 8] = [
    "Just checking in, any update?",
    "Quick question: do you offer a trial month?",
    "Also, do you work with companies our size?",
    "Could you send over a few client references?",
    "Is there someone I can talk to on the phone?",
    "Sorry, one more thing: what reporting do we get each week?",
    "We're comparing a couple of agencies. When can I expect the proposal?",
    "Thanks again for the info so far!",
];

/// Pause between two unprompted messages, in milliseconds.
const WRITE_INTERVAL_MS: RangeInclusive<u64> = 2_000..=5_000;
/// The first message comes quickly so a fresh inbox is not empty for long.
const FIRST_WRITE_AFTER: Duration = Duration::from_secs(1);
/// Chance that a lead answers an agent's message, and how long they take to type.
const REPLY_PROBABILITY: f64 = 0.6;
const REPLY_DELAY_MS: RangeInclusive<u64> = 4_000..=9_000;

/// The running simulation. Dropping it stops it abruptly; [`LeadSimulator::stop`] lets a
/// webhook in flight finish.
pub struct LeadSimulator {
    stop: watch::Sender<bool>,
    /// Ends with each lead's script progress.
    task: JoinHandle<Vec<usize>>,
}

impl LeadSimulator {
    /// Stops the simulation and returns how far each lead got through its script, in the
    /// order of [`LEADS`], for the next run to carry on from.
    pub async fn stop(mut self) -> Vec<usize> {
        let _ = self.stop.send(true);
        match (&mut self.task).await {
            Ok(progress) => progress,
            Err(e) => {
                tracing::error!(error = %e, "the lead simulator failed");
                Vec::new()
            }
        }
    }
}

impl Drop for LeadSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the leads writing in through `webhooks`, each from where `progress` (as returned
/// by [`LeadSimulator::stop`]) says it was; `sent` tells them when an agent answered.
pub fn start(wires: Wires, heard: Heard, progress: &[usize]) -> LeadSimulator {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(simulate(
        wires,
        heard,
        stopped,
        Playbook::new(StdRng::from_entropy(), progress),
    ));
    LeadSimulator { stop, task }
}

/// How leads reach the inbox: WhatsApp's webhook, mail, or Unipile's webhook.
pub struct Wires {
    pub webhooks: WebhookSender,
    pub mail: Mailer,
    pub linkedin: LinkedinWriter,
}

/// How leads hear an agent: what the sandbox, the SMTP sink and the Unipile stand-in saw
/// sent.
pub struct Heard {
    pub sent: broadcast::Receiver<SentMessage>,
    pub mailed: broadcast::Receiver<Received>,
    pub linkedin: broadcast::Receiver<LinkedinSent>,
}

async fn simulate(
    mut wires: Wires,
    heard: Heard,
    mut stopped: watch::Receiver<bool>,
    mut playbook: Playbook,
) -> Vec<usize> {
    let Heard {
        mut sent,
        mut mailed,
        linkedin: mut messaged,
    } = heard;
    let mut sink_open = true;
    let mut unipile_open = true;
    let mut next_write = Instant::now() + FIRST_WRITE_AFTER;
    // Replies being "typed": each finishes after its delay with the lead and the text.
    let mut typing: JoinSet<(&'static Lead, &'static str)> = JoinSet::new();
    let mut sandbox_open = true;
    loop {
        tokio::select! {
            () = until_stopped(&mut stopped) => break,
            () = tokio::time::sleep_until(next_write) => {
                let (lead, text) = playbook.next_line();
                write(&mut wires, lead, text, "lead wrote in").await;
                next_write = Instant::now() + playbook.write_interval();
            }
            Some(Ok((lead, text))) = typing.join_next() => {
                write(&mut wires, lead, text, "lead replied to the agent").await;
            }
            mail = mailed.recv(), if sink_open => match mail {
                Ok(mail) => {
                    let Some(to) = mail.to.first() else { continue };
                    wires.mail.answered(to, &mail.data);
                    if let Some((lead, text, delay)) = playbook.reply_to(to) {
                        typing.spawn(async move {
                            tokio::time::sleep(delay).await;
                            (lead, text)
                        });
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => sink_open = false,
            },
            message = messaged.recv(), if unipile_open => match message {
                Ok(message) => {
                    if let Some((lead, text, delay)) = playbook.reply_to(&message.to) {
                        typing.spawn(async move {
                            tokio::time::sleep(delay).await;
                            (lead, text)
                        });
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => unipile_open = false,
            },
            message = sent.recv(), if sandbox_open => match message {
                Ok(message) => {
                    if let Some((lead, text, delay)) = playbook.reply_to(&message.to) {
                        typing.spawn(async move {
                            tokio::time::sleep(delay).await;
                            (lead, text)
                        });
                    }
                }
                // Missing a few agent messages only means fewer replies.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => sandbox_open = false,
            },
        }
    }
    // Dropping `typing` abandons the replies still being typed.
    playbook.said.to_vec()
}

/// Resolves once a stop is requested (or the simulator handle is gone). Unlike a bare
/// `wait_for`, it holds no lock guard across the other `select!` arms' awaits.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn write(wires: &mut Wires, lead: &'static Lead, text: &str, what: &'static str) {
    if let Some(member) = lead.linkedin {
        match wires.linkedin.write(member, lead.name, text).await {
            Ok(id) => {
                tracing::info!(lead = lead.name, member, message_id = %id, text, "{what} on LinkedIn")
            }
            Err(e) => {
                tracing::warn!(lead = lead.name, error = %e, "a simulated lead's LinkedIn message failed")
            }
        }
        return;
    }
    if let Some(address) = lead.email {
        match wires.mail.send(lead.name, address, text).await {
            Ok(id) => {
                tracing::info!(lead = lead.name, address, message_id = %id, text, "{what} by email")
            }
            Err(e) => {
                tracing::warn!(lead = lead.name, error = %e, "a simulated lead's email failed")
            }
        }
        return;
    }
    match wires
        .webhooks
        .inbound_text(lead.wa_id, lead.name, text)
        .await
    {
        Ok(wamid) => tracing::info!(lead = lead.name, wa_id = lead.wa_id, %wamid, text, "{what}"),
        Err(e) => tracing::warn!(lead = lead.name, error = %e, "a simulated lead's webhook failed"),
    }
}

/// Email leads' outbox: raw RFC 5322 messages, signed and posted to the email webhook,
/// threaded like a mail client (a subject per lead, `In-Reply-To` and `References` naming
/// the agency's last mail to them).
pub struct Mailer {
    client: reqwest::Client,
    url: String,
    secret: String,
    /// The agency's address, the messages' `To`.
    to: String,
    /// Per lead address: the agency's last Message-ID to them, and how many they sent.
    threads: std::collections::HashMap<String, (Option<String>, u32)>,
}

impl Mailer {
    pub fn new(url: &str, secret: &str, to: &str) -> anyhow::Result<Mailer> {
        Ok(Mailer {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            url: url.to_owned(),
            secret: secret.to_owned(),
            to: to.to_owned(),
            threads: Default::default(),
        })
    }

    /// Remembers the agency's mail to `to` (a lead's reply names it).
    fn answered(&mut self, to: &str, data: &[u8]) {
        if let Ok(mail) = confab_engine::wire::email::parse(data, i64::MAX / 2) {
            self.threads.entry(to.to_owned()).or_default().0 = Some(mail.message_id);
        }
    }

    /// The raw message a lead sends; its Message-ID.
    fn compose(&mut self, name: &str, from: &str, text: &str) -> (String, String) {
        let (ours, sent) = self.threads.entry(from.to_owned()).or_default();
        *sent += 1;
        let domain = from.rsplit('@').next().unwrap_or("lead.example");
        let id = format!(
            "demo-{}-{}@{domain}",
            *sent,
            rand::thread_rng().gen::<u32>()
        );
        let subject = if *sent == 1 && ours.is_none() {
            "Lead generation enquiry".to_owned()
        } else {
            "Re: Lead generation enquiry".to_owned()
        };
        let threading = match ours {
            Some(ours) => format!("In-Reply-To: <{ours}>\r\nReferences: <{ours}>\r\n"),
            None => String::new(),
        };
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default();
        let raw = format!(
            "From: {name} <{from}>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
             Date: {date}\r\n{threading}MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\r\n-- \r\n{name}\r\n",
            self.to
        );
        (raw, id)
    }

    /// Sends one email from a lead through the webhook; its Message-ID.
    async fn send(&mut self, name: &str, from: &str, text: &str) -> anyhow::Result<String> {
        let (raw, id) = self.compose(name, from, text);
        let signature = confab_engine::wire::email::sign(&self.secret, raw.as_bytes());
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "message/rfc822")
            .header(confab_engine::wire::email::SIGNATURE_HEADER, signature)
            .body(raw)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::OK,
            "the email webhook answered HTTP {}",
            response.status()
        );
        Ok(id)
    }
}

/// Who says what next. Pure apart from its random number generator, so it is testable with a
/// seeded one.
struct Playbook {
    rng: StdRng,
    /// Per lead: how many script lines were sent.
    said: [usize; LEADS.len()],
    /// Per lead: how many replies were sent.
    replied: [usize; LEADS.len()],
}

impl Playbook {
    /// Starts each lead at its `progress` entry (missing entries at the beginning; values past
    /// the end of a script mean it is done).
    fn new(rng: StdRng, progress: &[usize]) -> Self {
        let mut said = [0; LEADS.len()];
        for ((said, &progress), lead) in said.iter_mut().zip(progress).zip(&LEADS) {
            *said = progress.min(lead.script.len());
        }
        Self {
            rng,
            said,
            replied: [0; LEADS.len()],
        }
    }

    /// The next unprompted line: a random lead's next script line, or once every script is
    /// done, a random lead's follow-up.
    fn next_line(&mut self) -> (&'static Lead, &'static str) {
        let pending: Vec<usize> = (0..LEADS.len())
            .filter(|&i| self.said[i] < LEADS[i].script.len())
            .collect();
        if pending.is_empty() {
            let lead = &LEADS[self.rng.gen_range(0..LEADS.len())];
            return (lead, FOLLOW_UPS[self.rng.gen_range(0..FOLLOW_UPS.len())]);
        }
        let i = pending[self.rng.gen_range(0..pending.len())];
        let text = LEADS[i].script[self.said[i]];
        self.said[i] += 1;
        (&LEADS[i], text)
    }

    /// Whether the lead the agent wrote to answers, with what and after how long. Messages to
    /// numbers that are not simulated leads go unanswered.
    fn reply_to(&mut self, to: &str) -> Option<(&'static Lead, &'static str, Duration)> {
        let i = LEADS.iter().position(|lead| {
            lead.wa_id == to || lead.email == Some(to) || lead.linkedin == Some(to)
        })?;
        if !self.rng.gen_bool(REPLY_PROBABILITY) {
            return None;
        }
        let lead = &LEADS[i];
        let text = lead.replies[self.replied[i] % lead.replies.len()];
        self.replied[i] += 1;
        let delay = Duration::from_millis(self.rng.gen_range(REPLY_DELAY_MS));
        Some((lead, text, delay))
    }

    fn write_interval(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(WRITE_INTERVAL_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn leads_are_distinct_and_have_something_to_say() {
        let ids: HashSet<_> = LEADS.iter().map(|lead| lead.wa_id).collect();
        assert_eq!(ids.len(), LEADS.len());
        for lead in &LEADS {
            assert!(
                !lead.script.is_empty() && !lead.replies.is_empty(),
                "{}",
                lead.name
            );
            assert!(
                lead.wa_id.bytes().all(|b| b.is_ascii_digit()),
                "{}",
                lead.wa_id
            );
        }
    }

    #[test]
    fn each_script_is_played_in_order_then_follow_ups_come() {
        let mut playbook = Playbook::new(StdRng::seed_from_u64(7), &[]);
        let total: usize = LEADS.iter().map(|lead| lead.script.len()).sum();
        let mut heard: Vec<Vec<&str>> = vec![Vec::new(); LEADS.len()];
        for _ in 0..total {
            let (lead, text) = playbook.next_line();
            let i = LEADS
                .iter()
                .position(|l| l.wa_id == lead.wa_id)
                .expect("a lead");
            heard[i].push(text);
        }
        for (i, lead) in LEADS.iter().enumerate() {
            assert_eq!(heard[i], lead.script);
        }
        for _ in 0..20 {
            assert!(FOLLOW_UPS.contains(&playbook.next_line().1));
        }
    }

    #[test]
    fn a_restarted_playbook_carries_on_where_it_stopped() {
        let mut playbook = Playbook::new(StdRng::seed_from_u64(3), &[2, 99]);
        assert_eq!(playbook.said[0], 2);
        assert_eq!(playbook.said[1], LEADS[1].script.len());
        assert_eq!(playbook.said[2], 0);
        for _ in 0..200 {
            let (lead, text) = playbook.next_line();
            if lead.wa_id == LEADS[0].wa_id && LEADS[0].script.contains(&text) {
                assert_ne!(text, LEADS[0].script[0]);
                assert_ne!(text, LEADS[0].script[1]);
            }
            assert!(lead.wa_id != LEADS[1].wa_id || FOLLOW_UPS.contains(&text));
        }
    }

    #[test]
    fn only_leads_reply_and_they_take_their_time() {
        let mut playbook = Playbook::new(StdRng::seed_from_u64(7), &[]);
        assert!(playbook.reply_to("000").is_none());
        let replies: Vec<_> = (0..100)
            .filter_map(|_| playbook.reply_to(LEADS[0].wa_id))
            .collect();
        // About 60 of 100; the seed makes it exact, the bounds keep the test honest.
        assert!((30..=90).contains(&replies.len()), "{}", replies.len());
        for (lead, text, delay) in replies {
            assert_eq!(lead.wa_id, LEADS[0].wa_id);
            assert!(LEADS[0].replies.contains(&text));
            assert!(REPLY_DELAY_MS.contains(&(delay.as_millis() as u64)));
        }
    }

    #[test]
    fn mailed_leads_thread_their_answers_to_the_agencys_mail() {
        use confab_engine::wire::email;
        let now = 4_000_000_000_000;
        let mut mailer =
            Mailer::new("http://127.0.0.1:1", "secret", "hello@agency.example").expect("mailer");
        let (first, id) = mailer.compose("Priya Nair", "priya@launchpad.example", "Hi there");
        let parsed = email::parse(first.as_bytes(), now).expect("parses");
        assert_eq!(parsed.message_id, id);
        assert_eq!(parsed.from_name.as_deref(), Some("Priya Nair"));
        assert_eq!(parsed.subject.as_deref(), Some("Lead generation enquiry"));
        assert_eq!(
            parsed.reply_text, "Hi there",
            "the signature is not the message"
        );
        assert!(parsed.replies_to.is_empty());
        mailer.answered(
            "priya@launchpad.example",
            b"From: hello@agency.example\r\nMessage-ID: <ours-1@agency.example>\r\n\r\nok",
        );
        let (second, _) = mailer.compose("Priya Nair", "priya@launchpad.example", "Thanks");
        let parsed = email::parse(second.as_bytes(), now).expect("parses");
        assert_eq!(parsed.replies_to, vec!["ours-1@agency.example".to_owned()]);
        assert_eq!(
            parsed.subject.as_deref(),
            Some("Re: Lead generation enquiry")
        );
        let mut playbook = Playbook::new(StdRng::seed_from_u64(2), &[]);
        assert!((0..20).any(|_| playbook
            .reply_to("lukas.becker@sensorwerk.example")
            .is_some_and(|(lead, _, _)| lead.name == "Lukas Becker")));
    }

    #[test]
    fn intervals_stay_in_range() {
        let mut playbook = Playbook::new(StdRng::seed_from_u64(1), &[]);
        for _ in 0..100 {
            let ms = playbook.write_interval().as_millis() as u64;
            assert!(WRITE_INTERVAL_MS.contains(&ms));
        }
    }
}
