//! The models a process serves, by id: chat models, each behind its own engine, and
//! embedding models. Every front end (HTTP, gRPC, Python) looks models up here, so an unknown
//! id or a model of the wrong kind is reported the same way everywhere.
//!
//! Models come and go while serving. A request for a model that is not loaded but known (a
//! built-in id, a model in the operator's models folder, a hub id when pulling is allowed)
//! loads it, and concurrent first requests wait for that one load. A request holds its model
//! through a [`ModelLease`]; a model with leases is never unloaded. Idle models are unloaded
//! after their keep-alive, and evicted least recently used first when another model needs
//! their room within the memory budget; when the room cannot be made because the other
//! models are busy, the request gets [`Error::NoRoom`] (try again later) rather than the
//! process running out of memory.

mod footprint;
mod keep_alive;
mod lease;
mod locate;
mod served;
mod slots;
mod status;
mod templates;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::chat_model::{ChatModel, LoadOptions};
use crate::embeddings::EmbeddingModel;
use crate::engine::{Engine, EngineConfig, EngineHandle};
use crate::models::LoadQuantization;
use crate::source::{
    self, ModelHome, ModelKind, ModelSpec, Progress, ResolvedModel, SourceOptions,
};
use crate::{Error, Result};

pub use footprint::Footprint;
pub use keep_alive::KeepAlive;
pub use lease::ModelLease;
use locate::ModelLocator;
pub use served::ServedModel;
use slots::{LoadFailure, LoadOutcome, Slot, SlotState, Slots};
use status::status_of;
pub use status::{MemoryUse, ModelState, ModelStatus, Unloaded};
pub use templates::ChatTemplateOverride;

/// How a registry loads models and how long it keeps them.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The settings of every chat model's engine.
    pub engine: EngineConfig,
    /// Chat templates in place of models' own (`--chat-template`).
    pub chat_templates: Vec<ChatTemplateOverride>,
    /// The packed format safetensors chat models are quantised to at load (`--quantize`).
    pub quantize: Option<LoadQuantization>,
    /// A folder whose `NAME.gguf` files and `NAME/` model folders load on first use as model
    /// `NAME` (`--models-dir`).
    pub models_dir: Option<PathBuf>,
    /// Whether a request may download a model: a built-in not yet in the cache, or a hub id
    /// (`--allow-pull`).
    pub allow_pull: bool,
    /// How long an idle model stays loaded (`--keep-alive`).
    pub keep_alive: KeepAlive,
    /// The most bytes the weights and KV caches of all loaded models may take together
    /// (`--memory-budget`); `None`: no bound.
    pub memory_budget: Option<u64>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            chat_templates: Vec::new(),
            quantize: None,
            models_dir: None,
            allow_pull: false,
            keep_alive: KeepAlive::Forever,
            memory_budget: None,
        }
    }
}

/// The models a process serves; cheap to clone (clones share the models).
#[derive(Clone)]
pub struct ModelRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    config: RegistryConfig,
    locator: ModelLocator,
    /// The model cache, as the environment named it when the registry was made (`None`
    /// when it names none: loads that need it say why).
    home: Option<ModelHome>,
    slots: Mutex<Slots>,
    /// Signalled when a load ends, a lease ends or a keep-alive changes.
    changed: Condvar,
    /// The sources of the models loaded so far, to load them again after an unload.
    sources: Mutex<Vec<ResolvedModel>>,
    /// Loads started, for tests and listings.
    loads: std::sync::atomic::AtomicU64,
}

/// How long the reaper sleeps at most between looks (it also notices a dropped registry).
const REAPER_TICK: Duration = Duration::from_millis(500);

/// The wait suggested when a model cannot fit beside busy ones.
const NO_ROOM_RETRY_SECS: u64 = 5;

impl Default for ModelRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelRegistry {
    /// An empty registry that loads nothing on its own: models are [`Self::add`]ed.
    pub fn new() -> Self {
        Self::build(RegistryConfig::default(), false)
    }

    /// An empty registry that loads known models on first use, as `config` says: built-ins
    /// in the cache, the models folder's, models it loaded before, and with
    /// [`RegistryConfig::allow_pull`] downloads.
    pub fn with_config(config: RegistryConfig) -> Self {
        Self::build(config, true)
    }

    fn build(config: RegistryConfig, on_demand: bool) -> Self {
        let locator = ModelLocator {
            models_dir: config.models_dir.clone(),
            allow_pull: config.allow_pull,
            builtins: on_demand,
        };
        let shared = Arc::new(Shared {
            config,
            locator,
            home: ModelHome::from_env().ok(),
            slots: Mutex::new(Slots::default()),
            changed: Condvar::new(),
            sources: Mutex::new(Vec::new()),
            loads: Default::default(),
        });
        let weak = Arc::downgrade(&shared);
        // The reaper unloads models whose keep-alive ran out; it ends with the registry.
        let _ = std::thread::Builder::new()
            .name("helixflow-reaper".into())
            .spawn(move || reap(weak));
        Self { shared }
    }

    /// A registry as `config` says, with each of `args` loaded at once (a built-in id, a hub
    /// id or a path, as the CLI accepts them). A template naming a model that is neither
    /// loaded nor loadable, or `--quantize` with no safetensors chat model anywhere, is an
    /// error, so that a typo is not silently ignored.
    pub fn start(config: RegistryConfig, args: &[String], progress: &dyn Progress) -> Result<Self> {
        config.engine.validate()?;
        let registry = Self::with_config(config);
        let mut quantized = false;
        for arg in args {
            let resolved = source::resolve_arg(arg, progress)?;
            quantized |=
                resolved.kind == ModelKind::Chat && crate::models::is_hf_folder(&resolved.path);
            let name = resolved.name.clone();
            {
                let mut slots = registry.lock();
                if slots.position(&name).is_some() {
                    return Err(Error::InvalidRequest(format!(
                        "two models are named `{name}`"
                    )));
                }
                let keep_alive = registry.config().keep_alive;
                let outcome = LoadOutcome::default();
                slots.slots.push(Slot::loading(&name, outcome, keep_alive));
            }
            let lease = registry.finish_load(&name, registry.bring_in(&name, resolved));
            drop(lease?);
        }
        let config = registry.config();
        let dynamic = config.models_dir.is_some() || config.allow_pull;
        if let (Some(format), false, false) = (config.quantize, quantized, dynamic) {
            return Err(Error::InvalidRequest(format!(
                "--quantize {format:?} applies to safetensors chat models, and none is served"
            )));
        }
        for id in config
            .chat_templates
            .iter()
            .filter_map(|o| o.model.as_deref())
        {
            let loaded_chat = matches!(registry.get(id), Some(ServedModel::Chat(_)));
            if !loaded_chat && registry.source_of(id).is_err() {
                return Err(Error::InvalidRequest(format!(
                    "--chat-template names `{id}`, which is not a chat model served here"
                )));
            }
        }
        Ok(registry)
    }

    /// The registry's settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.shared.config
    }

    /// Adds a loaded model, kept until [`Self::unload`]ed (it is never evicted or expired:
    /// the registry could not load it again). A second model with the same id is an error.
    pub fn add(&self, model: ServedModel) -> Result<()> {
        let mut slots = self.lock();
        if slots.position(model.id()).is_some() {
            return Err(Error::InvalidRequest(format!(
                "two models are named `{}`",
                model.id()
            )));
        }
        let mut slot = Slot::ready(model, KeepAlive::Forever, false);
        slot.footprint = footprint_of_loaded(slot.model().expect("ready"));
        slots.slots.push(slot);
        Ok(())
    }

    /// The loaded models, in the order they came.
    pub fn loaded(&self) -> Vec<ServedModel> {
        self.lock()
            .slots
            .iter()
            .filter_map(|s| s.model().cloned())
            .collect()
    }

    /// Loaded model `id`, without holding it (see [`Self::acquire`] for that).
    pub fn get(&self, id: &str) -> Option<ServedModel> {
        let slots = self.lock();
        slots.slots.iter().find(|s| s.id == id)?.model().cloned()
    }

    /// The engine of loaded chat model `id`: [`Error::ModelNotFound`] if no loaded model has
    /// that id, [`Error::WrongModelKind`] if it is an embedding model.
    pub fn chat(&self, id: &str) -> Result<EngineHandle> {
        let model = self
            .get(id)
            .ok_or_else(|| Error::ModelNotFound(id.to_string()))?;
        model.chat().cloned()
    }

    /// Loaded embedding model `id`; errors as for [`Self::chat`].
    pub fn embedding(&self, id: &str) -> Result<Arc<EmbeddingModel>> {
        let model = self
            .get(id)
            .ok_or_else(|| Error::ModelNotFound(id.to_string()))?;
        model.embedding().cloned()
    }

    /// The engines of the loaded chat models.
    pub fn engines(&self) -> Vec<EngineHandle> {
        self.loaded()
            .into_iter()
            .filter_map(|m| m.chat().ok().cloned())
            .collect()
    }

    /// How much of the memory budget is taken.
    pub fn memory(&self) -> MemoryUse {
        MemoryUse {
            reserved_bytes: self.lock().reserved(),
            budget_bytes: self.config().memory_budget,
        }
    }

    /// Loads started since the registry was made (start-up models included).
    pub fn loads(&self) -> u64 {
        self.shared.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Model `id` held for one request, without waiting: `None` unless it is loaded.
    pub fn acquire_loaded(&self, id: &str) -> Option<ModelLease> {
        let mut slots = self.lock();
        let slot = slots.get_mut(id)?;
        let model = slot.model()?.clone();
        slot.leases += 1;
        drop(slots);
        Some(ModelLease::new(self, model))
    }

    /// Model `id` held for one request, loaded first if it is not (blocking until it is;
    /// requests that ask while it loads wait for the same load). [`Error::ModelNotFound`]
    /// for an id the registry does not know; [`Error::NoRoom`] when it cannot fit beside the
    /// busy models; the load's own error when loading fails.
    pub fn acquire(&self, id: &str) -> Result<ModelLease> {
        let mut source = None;
        loop {
            let mut slots = self.lock();
            if let Some(slot) = slots.get_mut(id) {
                match &slot.state {
                    SlotState::Ready(model) => {
                        let model = model.clone();
                        slot.leases += 1;
                        drop(slots);
                        return Ok(ModelLease::new(self, model));
                    }
                    SlotState::Loading(outcome) => {
                        let outcome = outcome.clone();
                        while outcome.get().is_none() {
                            slots = self
                                .shared
                                .changed
                                .wait(slots)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                        if let Some(Err(failure)) = outcome.get() {
                            return Err(failure.error(id));
                        }
                        continue;
                    }
                }
            }
            let Some(found) = source.take() else {
                // Where it comes from is found outside the lock: it may read a folder.
                drop(slots);
                source = Some(self.source_of(id)?);
                continue;
            };
            slots.slots.push(Slot::loading(
                id,
                LoadOutcome::default(),
                self.config().keep_alive,
            ));
            drop(slots);
            let loaded = match found {
                Source::Known(resolved) => self.bring_in(id, resolved),
                Source::Spec(spec) => self.resolve(&spec).and_then(|r| self.bring_in(id, r)),
            };
            return self.finish_load(id, loaded);
        }
    }

    /// Loads model `id` if it is not loaded, as a request would (see [`Self::acquire`]),
    /// and starts its keep-alive: `keep_alive` where given, else the registry's.
    pub fn load(&self, id: &str, keep_alive: Option<KeepAlive>) -> Result<ModelStatus> {
        let lease = self.acquire(id)?;
        if let Some(keep_alive) = keep_alive {
            lease.set_keep_alive(keep_alive);
        }
        drop(lease);
        self.status(id)
            .ok_or_else(|| Error::ModelNotFound(id.to_string()))
    }

    /// Fetches model `id` into the cache without loading it, as `ollama pull` does: a model
    /// in the cache is verified afresh, one in the models folder is there already, and a
    /// download (a built-in not yet in the cache, a hub id) needs
    /// [`RegistryConfig::allow_pull`] ([`Error::ModelNotFound`] without it).
    pub fn pull(&self, id: &str, progress: &dyn Progress) -> Result<()> {
        let spec = match self.source_of(id)? {
            Source::Known(resolved) => {
                progress.message(&format!("{id} is at {}", resolved.path.display()));
                return Ok(());
            }
            Source::Spec(spec) => spec,
        };
        if let ModelSpec::LocalFile(path) | ModelSpec::LocalDir(path) = &spec {
            progress.message(&format!("{id} is at {}", path.display()));
            return Ok(());
        }
        source::pull_with(&spec, &self.home()?, &SourceOptions::from_env(), progress).map(|_| ())
    }

    /// Unloads model `id` now, or when its requests in flight end.
    pub fn unload(&self, id: &str) -> Result<Unloaded> {
        let mut slots = self.lock();
        let slot = slots
            .get_mut(id)
            .ok_or_else(|| Error::ModelNotFound(id.to_string()))?;
        if slot.model().is_none() {
            return Err(Error::InvalidRequest(format!(
                "model `{id}` is still loading; unload it once it is loaded"
            )));
        }
        if slot.leases > 0 {
            slot.unload_when_idle = true;
            return Ok(Unloaded::WhenIdle {
                in_flight: slot.leases,
            });
        }
        let gone = slots.remove(id);
        drop(slots);
        drop(gone);
        Ok(Unloaded::Now)
    }

    /// The models loaded and loading, then those a request would load (models unloaded
    /// before, built-ins in the cache, the models folder's), each id once.
    pub fn list(&self) -> Vec<ModelStatus> {
        let mut list: Vec<ModelStatus> = {
            let slots = self.lock();
            slots.slots.iter().map(status_of).collect()
        };
        let mut available = |id: String, kind: Option<ModelKind>| {
            if !list.iter().any(|m| m.id == id) {
                list.push(ModelStatus::available(id, kind));
            }
        };
        for known in self.sources().iter() {
            available(known.name.clone(), Some(known.kind));
        }
        if let Some(home) = &self.shared.home {
            for entry in source::builtin_models() {
                if self.shared.locator.builtin_available(entry, home) {
                    available(entry.id.to_string(), Some(entry.kind));
                }
            }
        }
        for (id, _) in self.shared.locator.models_dir_entries() {
            available(id, None);
        }
        list
    }

    /// Whether `id` is loaded, loading, or would be loaded by a request for it.
    pub fn knows(&self, id: &str) -> bool {
        self.lock().position(id).is_some() || self.source_of(id).is_ok()
    }

    /// Model `id`'s status if it is loaded or loading.
    pub fn status(&self, id: &str) -> Option<ModelStatus> {
        let slots = self.lock();
        slots.slots.iter().find(|s| s.id == id).map(status_of)
    }

    fn notify(&self) {
        self.shared.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sources(&self) -> MutexGuard<'_, Vec<ResolvedModel>> {
        self.shared
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Where model `id` would be loaded from.
    fn source_of(&self, id: &str) -> Result<Source> {
        if let Some(known) = self.sources().iter().find(|r| r.name == id) {
            return Ok(Source::Known(known.clone()));
        }
        self.shared
            .locator
            .locate(id, &self.home()?)
            .map(Source::Spec)
    }

    /// The model cache (its error, when the environment names none).
    fn home(&self) -> Result<ModelHome> {
        match &self.shared.home {
            Some(home) => Ok(home.clone()),
            None => ModelHome::from_env(),
        }
    }

    /// The files of `spec`, downloaded if need be.
    fn resolve(&self, spec: &ModelSpec) -> Result<ResolvedModel> {
        let options = SourceOptions::from_env();
        source::resolve_with(spec, &self.home()?, &options, &source::StderrProgress)
    }

    /// Reserves room for `resolved` (evicting idle models if need be) and loads it as `id`.
    fn bring_in(&self, id: &str, mut resolved: ResolvedModel) -> Result<ServedModel> {
        self.shared
            .loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = self.config();
        let footprint = Footprint::estimate(
            &resolved,
            config.quantize,
            config.engine.kv_budget_bytes()? as u64,
        );
        let evicted = {
            let mut slots = self.lock();
            let evicted = match config.memory_budget {
                None => Vec::new(),
                Some(budget) => slots
                    .make_room(id, footprint.total(), budget)
                    .map_err(|free| Error::NoRoom {
                        model: id.to_string(),
                        needed: footprint.total(),
                        free,
                        budget,
                        retry_after_secs: NO_ROOM_RETRY_SECS,
                    })?,
            };
            if let Some(slot) = slots.get_mut(id) {
                slot.footprint = footprint;
            }
            evicted
        };
        drop(evicted);
        resolved.name = id.to_string();
        let model = load_resolved(&resolved, config)?;
        let mut sources = self.sources();
        sources.retain(|known| known.name != id);
        sources.push(resolved);
        Ok(model)
    }

    /// Records how the load of `id` ended, wakes the requests waiting on it, and holds the
    /// model for the request that loaded it.
    fn finish_load(&self, id: &str, loaded: Result<ServedModel>) -> Result<ModelLease> {
        let mut slots = self.lock();
        let at = slots
            .position(id)
            .expect("a loading model stays in the table until its load ends");
        let SlotState::Loading(outcome) = &slots.slots[at].state else {
            unreachable!("only the request that loads a model finishes its load")
        };
        let outcome = outcome.clone();
        let result = match loaded {
            Ok(model) => {
                let slot = &mut slots.slots[at];
                slot.state = SlotState::Ready(model.clone());
                slot.leases = 1;
                slot.loaded_at = SystemTime::now();
                let _ = outcome.set(Ok(()));
                Ok(ModelLease::new(self, model))
            }
            Err(e) => {
                slots.slots.remove(at);
                let _ = outcome.set(Err(LoadFailure::of(&e)));
                Err(e)
            }
        };
        drop(slots);
        self.shared.changed.notify_all();
        result
    }

    /// Ends one request's hold on `id`; unloads it at once when it is to go as soon as it
    /// is idle.
    fn release(&self, id: &str) {
        let mut slots = self.lock();
        let mut gone = None;
        if let Some(slot) = slots.get_mut(id) {
            slot.leases = slot.leases.saturating_sub(1);
            slot.requests += 1;
            slot.idle_since = Instant::now();
            slot.last_used = SystemTime::now();
            if slot.expires_at().is_some_and(|at| at <= slot.idle_since) {
                gone = slots.remove(id);
            }
        }
        drop(slots);
        drop(gone);
        self.shared.changed.notify_all();
    }
}

/// Where a model to load comes from.
enum Source {
    /// A model loaded before, from these files.
    Known(ResolvedModel),
    /// A model named for the first time.
    Spec(ModelSpec),
}

/// Loads resolved files as a served model.
fn load_resolved(resolved: &ResolvedModel, config: &RegistryConfig) -> Result<ServedModel> {
    Ok(match resolved.kind {
        ModelKind::Chat => {
            let folder = crate::models::is_hf_folder(&resolved.path);
            let options = LoadOptions {
                chat_template: ChatTemplateOverride::find(&config.chat_templates, &resolved.name),
                quantize: config.quantize.filter(|_| folder),
            };
            let chat = ChatModel::load_with(&resolved.path, &resolved.name, &options)?;
            ServedModel::Chat(Engine::start(Arc::new(chat), config.engine.clone())?)
        }
        ModelKind::Embedding => ServedModel::Embedding(Arc::new(
            EmbeddingModel::load(&resolved.path)?.with_name(resolved.name.clone()),
        )),
    })
}

/// What a model added already loaded takes: its engine's KV budget (its weights' size is
/// not known).
fn footprint_of_loaded(model: &ServedModel) -> Footprint {
    Footprint {
        weights_bytes: 0,
        kv_cache_bytes: model
            .chat()
            .ok()
            .and_then(|engine| engine.config().kv_budget_bytes().ok())
            .unwrap_or(0) as u64,
    }
}

/// Unloads models whose keep-alive ran out, until the registry is dropped.
fn reap(registry: Weak<Shared>) {
    while let Some(shared) = registry.upgrade() {
        let slots = shared.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut slots = slots;
        let (gone, next) = slots.expire(Instant::now());
        if !gone.is_empty() {
            drop(slots);
            drop(gone);
            continue;
        }
        let wait = next.map_or(REAPER_TICK, |at| {
            at.saturating_duration_since(Instant::now())
                .min(REAPER_TICK)
        });
        let _ = shared.changed.wait_timeout(slots, wait);
    }
}
