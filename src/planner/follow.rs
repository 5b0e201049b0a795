//! What other writers put on the object: a size fluxk8s did not set, and the desired-size
//! annotation; and the Events and annotation fluxk8s records in answer.

use super::reconciler::Reconciler;
use super::status::SizeWriter;
use crate::model::{
    Action, DESIRED_SIZE_ANNOTATION, FIELD_MANAGER, FluxView, KubeAction, KubeView,
};

impl Reconciler {
    /// A size on the object that fluxk8s did not write (kubectl, an HPA, a GitOps tool)
    /// becomes the desired size, as a resize would, and fluxk8s stops writing sizes until
    /// a request from Flux: it never undoes another writer's change.
    pub(super) fn follow_other_writer(&mut self, flux: &FluxView, kube: &KubeView) {
        let size = kube.requested_size();
        let Some(before) = self.seen_size.replace(size) else {
            return;
        };
        let ours = self.issued.any(|action| {
            matches!(action, Action::Kube(KubeAction::SetSize { size: asked, .. }) if *asked == size)
        }) || kube.size_manager() == Some(FIELD_MANAGER);
        if size == before || ours {
            return;
        }
        let max = kube
            .minicluster
            .as_ref()
            .map_or(flux.size(), |mc| mc.max_size.min(flux.size()));
        let writer = SizeWriter {
            manager: kube.size_manager().unwrap_or("unknown").to_owned(),
            size,
        };
        tracing::info!(
            "size {before} -> {size} set by {}: following it as the desired size",
            writer.manager
        );
        self.desired = Some(size.max(self.config.min_size).min(max.max(1)));
        self.grow_reason = None;
        self.announcements.push(Announcement {
            reason: "SizeFollowed",
            message: format!(
                "size set to {size} by {}: fluxk8s takes it as the desired size and changes \
                 no size until a resize from Flux",
                writer.manager
            ),
            warning: false,
        });
        self.size_set_by = Some(writer);
    }

    /// The desired-size annotation: at the first plan it restores the intent a reload or
    /// a new rank-0 pod forgot; later, a value fluxk8s did not write is a resize request,
    /// drain-aware like `flux k8s resize`, and a bad one is refused with a Warning Event.
    pub(super) fn follow_annotation(&mut self, flux: &FluxView, kube: &KubeView, now: f64) {
        let annotation = kube.desired_size();
        let value = annotation.map(|a| a.value.clone());
        let Some(before) = self.seen_annotation.replace(value.clone()) else {
            if let Some(size) = value.as_deref().and_then(parse_size)
                && self.desired.is_none()
            {
                tracing::info!("desired size {size} restored from {DESIRED_SIZE_ANNOTATION}");
                // Clamped and checked as a request; only a broken view could refuse it.
                let _ = self.request_size_because(size, None, flux, Some(kube), now);
            }
            return;
        };
        let Some(annotation) = annotation.filter(|_| before != value) else {
            return;
        };
        let ours = annotation.manager.as_deref() == Some(FIELD_MANAGER)
            || self.issued.any(|action| {
                matches!(action, Action::Kube(KubeAction::RecordDesiredSize { size })
                    if size.to_string() == annotation.value)
            });
        if ours {
            return;
        }
        let who = annotation.manager.as_deref().unwrap_or("unknown");
        let announcement = match parse_size(&annotation.value) {
            Some(size) => match self.request_size_because(size, None, flux, Some(kube), now) {
                Ok(answer) => {
                    tracing::info!(
                        "resize to {size} asked by {who} through {DESIRED_SIZE_ANNOTATION}"
                    );
                    Announcement {
                        reason: "ResizeRequested",
                        message: format!(
                            "{DESIRED_SIZE_ANNOTATION}={size} set by {who}: resizing to {} live \
                             ranks, drain-aware",
                            answer.target
                        ),
                        warning: false,
                    }
                }
                Err(err) => Announcement {
                    reason: "BadDesiredSize",
                    message: format!(
                        "{DESIRED_SIZE_ANNOTATION}={size} set by {who} refused: {err}"
                    ),
                    warning: true,
                },
            },
            None => Announcement {
                reason: "BadDesiredSize",
                message: format!(
                    "{DESIRED_SIZE_ANNOTATION}={:?} set by {who} is not a whole number >= 1: \
                     nothing changed",
                    annotation.value
                ),
                warning: true,
            },
        };
        if announcement.warning {
            tracing::warn!("{}", announcement.message);
        }
        self.announcements.push(announcement);
    }

    /// What the object and its Events should record after a plan: the desired size as
    /// an annotation when the object says another, and what happened since the last call
    /// (size changes followed, annotation requests and refusals). Apart from [`plan`],
    /// whose actions change the cluster.
    ///
    /// [`plan`]: Self::plan
    pub fn records(&mut self, kube: Option<&KubeView>, now: f64) -> Vec<Action> {
        let mut records: Vec<Action> = std::mem::take(&mut self.announcements)
            .into_iter()
            .map(|said| {
                Action::Kube(KubeAction::RecordEvent {
                    reason: said.reason.to_owned(),
                    message: said.message,
                    warning: said.warning,
                })
            })
            .collect();
        // Alone only once nothing is in flight: a size change on the way carries it in
        // its own patch instead (one patch per resize).
        let wanted = kube
            .and_then(|kube| self.unrecorded_desired(kube))
            .map(|size| Action::Kube(KubeAction::RecordDesiredSize { size }));
        self.issued.keep_refused(|action| {
            !matches!(action, Action::Kube(KubeAction::RecordDesiredSize { .. }))
                || Some(action) == wanted.as_ref()
        });
        if let Some(action) = wanted
            && self.issued.is_empty()
            && !self.issued.is_refused(&action)
        {
            self.issued.record(&action, now);
            records.push(action);
        }
        records
    }

    /// The desired size, when the object's annotation does not say it yet (and no other
    /// writer's size is being followed).
    pub(super) fn unrecorded_desired(&self, kube: &KubeView) -> Option<u32> {
        let size = self.desired.filter(|_| self.size_set_by.is_none())?;
        (!kube.records_desired_size(size)).then_some(size)
    }
}

/// Something to record as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Announcement {
    pub reason: &'static str,
    pub message: String,
    /// Something was refused: a `Warning` Event.
    pub warning: bool,
}

/// A size as a user writes it in the annotation: a whole number >= 1.
fn parse_size(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|&n| n >= 1)
}
