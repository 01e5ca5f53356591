//! Every string the dashboard shows, in English and Simplified Chinese, in one table.
//! Views never hold literals: they call [`t`] with a [`Key`].

use leptos::prelude::*;

/// A UI language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// The BCP-47 tag for `<html lang>`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// Picks the language from a browser tag such as `zh-CN` or `en-US`.
    pub fn from_tag(tag: &str) -> Lang {
        if tag.to_ascii_lowercase().starts_with("zh") {
            Lang::Zh
        } else {
            Lang::En
        }
    }
}

macro_rules! strings {
    ($( $key:ident => $en:expr, $zh:expr; )*) => {
        /// A UI string's name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Key { $( $key, )* }

        /// The text of `key` in `lang`.
        pub fn text(lang: Lang, key: Key) -> &'static str {
            match (lang, key) {
                $( (Lang::En, Key::$key) => $en, (Lang::Zh, Key::$key) => $zh, )*
            }
        }

        /// Every key, for completeness tests.
        pub const ALL_KEYS: &[Key] = &[ $( Key::$key, )* ];
    };
}

strings! {
    AppTitle => "Stepwatch", "Stepwatch 训练监控";
    Tagline => "Live training monitor", "实时训练监控";
    Runs => "Runs", "训练任务";
    AllRuns => "All runs", "全部任务";
    NoRuns => "No runs yet. Point a trainer at this relay and its run appears here live.", "还没有训练任务。让训练程序连接到此中继,任务会实时出现在这里。";
    NoRunsHint => "Python: stepwatch.connect(\"http://127.0.0.1:8080\", run=\"my-run\")", "Python: stepwatch.connect(\"http://127.0.0.1:8080\", run=\"my-run\")";
    ColName => "Name", "名称";
    ColStatus => "Status", "状态";
    ColProgress => "Progress", "进度";
    ColStep => "Step", "步数";
    ColLoss => "Loss", "损失";
    ColBestLoss => "Best loss", "最佳损失";
    ColStarted => "Started", "开始时间";
    ColDuration => "Duration", "时长";
    Status => "Status", "状态";
    Epoch => "Epoch", "轮次";
    Batch => "Batch", "批次";
    Loss => "Loss", "损失";
    AvgLoss => "Avg loss", "平均损失";
    BestLoss => "Best batch loss", "最佳批次损失";
    BestLossHint => "The lowest single training-batch loss: noisy, and biased low. Runs that report a validation loss (val_loss, eval_loss …) show its best instead.", "单个训练批次的最低损失:波动大且偏低。报告验证损失(val_loss、eval_loss 等)的任务改为显示其最佳值。";
    BestVal => "Best val loss", "最佳验证损失";
    ValTag => "val", "验证";
    BestValHint => "The lowest validation loss the run reported", "该任务报告的最低验证损失";
    StoppedAt => "stopped at", "停止于";
    FailedAt => "failed at", "失败于";
    LearningRate => "Learning rate", "学习率";
    Step => "Step", "步数";
    Elapsed => "Elapsed", "已用时间";
    LossCurve => "Loss curve", "损失曲线";
    NoPointsYet => "Waiting for batch_end events…", "等待 batch_end 事件…";
    LoadingHistory => "Loading history…", "正在加载历史数据…";
    StatusPending => "pending", "等待中";
    StatusRunning => "running", "运行中";
    StatusPaused => "paused", "已暂停";
    StatusCompleted => "completed", "已完成";
    StatusFailed => "failed", "失败";
    StatusStopped => "stopped", "已停止";
    StatusStale => "stale", "无响应";
    Live => "live", "实时";
    Reconnecting => "reconnecting…", "正在重连…";
    Connecting => "connecting…", "连接中…";
    Offline => "offline — retrying", "离线 — 正在重试";
    ChartKeys => "Chart: arrows pan, + / − zoom, 0 resets", "图表:方向键平移,+ / − 缩放,0 重置";
    BackToRuns => "← Runs", "← 任务列表";
    RunNotFound => "No such run yet: it appears as soon as its first event arrives.", "暂无此任务:收到第一个事件后即会出现。";
    NonFiniteLoss => "Loss is not finite (NaN or infinity): the run may have diverged.", "损失值非有限(NaN 或无穷):训练可能已发散。";
    LastError => "Error", "错误";
    Checkpoints => "Recent checkpoints", "最近的检查点";
    NoCheckpoints => "No checkpoints yet.", "还没有检查点。";
    Best => "best", "最佳";
    Saves => "saves", "次保存";
    SavesHint => "Saved this many times to the same path: each save replaced the file, so Load reads the newest.", "多次保存到同一路径:每次保存都覆盖了文件,加载读取的是最新的一次。";
    LastSample => "last sample", "最后采样";
    Ended => "ended", "已结束";
    Config => "Training parameters", "训练参数";
    RunInfo => "Run info", "运行信息";
    Events => "events", "个事件";
    Language => "Language", "语言";
    Relay => "Relay", "中继";
    SecondsAgo => "s ago", "秒前";
    MinutesAgo => "min ago", "分钟前";
    HoursAgo => "h ago", "小时前";
    DaysAgo => "d ago", "天前";
    JustNow => "just now", "刚刚";
    Eta => "ETA", "预计剩余";
    EventsPerS => "Events/s", "事件/秒";
    LearningRateCurve => "Learning rate", "学习率曲线";
    Metrics => "Metrics", "指标";
    XAxis => "X axis", "横轴";
    XStep => "Step", "步数";
    XWall => "Wall time", "时间";
    XRelative => "Relative", "相对时间";
    Smoothing => "Smoothing", "平滑";
    LogScale => "log", "对数";
    ResetZoom => "Reset zoom", "重置缩放";
    ExportPng => "PNG", "PNG";
    ExportCsv => "Export CSV", "导出 CSV";
    ZoomHint => "Drag to zoom · double-click to reset", "拖动缩放 · 双击重置";
    Logs => "Logs", "日志";
    NoLogs => "No log lines yet. Records of Python's logging module appear here; print() output too when the trainer connects with stepwatch.connect(…, capture_stdout=True).", "还没有日志。Python logging 模块的记录会显示在这里;若训练程序以 stepwatch.connect(…, capture_stdout=True) 连接,print() 的输出也会显示。";
    AllLevels => "All levels", "全部级别";
    Search => "Search…", "搜索…";
    Follow => "Follow", "跟随";
    Paused => "Paused", "已暂停";
    System => "System", "系统资源";
    NoSystem => "No system samples yet.", "还没有系统资源数据。";
    World => "Ranks", "分布式进程";
    Samples => "Samples", "样本";
    Latest => "latest", "最新";
    Prompt => "Prompt", "输入";
    Answer => "Answer", "回答";
    Node => "node", "节点";
    Utilisation => "utilisation", "利用率";
    Memory => "memory", "内存";
    StepTime => "step · step time", "步数 · 每步用时";
    Slowest => "slowest rank", "最慢进程";
    RankEnded => "ended", "已结束";
    RankLost => "lost", "失联";
    AllRanks => "all ranks", "全部进程";
    WaitingRanks => "waiting for ranks", "等待进程";
    Cpu => "CPU", "CPU";
    Ram => "RAM", "内存";
    Gpu => "GPU", "GPU";
    GpuMem => "GPU memory", "显存";
    Temperature => "Temp", "温度";
    Power => "Power", "功耗";
    Traceback => "Traceback", "调用栈";
    Fatal => "fatal", "致命";
    ColFile => "File", "文件";
    ColEpoch => "Epoch", "轮次";
    ColSize => "Size", "大小";
    ColSaved => "Saved", "保存时间";
    ColMetrics => "Metrics", "指标";
    FilterRuns => "Filter by name…", "按名称筛选…";
    AllStatuses => "All statuses", "全部状态";
    Compare => "Compare", "对比";
    CompareRuns => "Compare runs", "对比训练任务";
    CompareHint => "Tick two or more runs to compare them.", "勾选两个或更多任务进行对比。";
    Baseline => "baseline", "基线";
    ConfigDiff => "Config differences", "配置差异";
    NoConfigDiff => "The runs share the same config.", "这些任务的配置相同。";
    Summary => "Summary", "汇总";
    ColMetric => "Metric", "指标";
    ColRun => "Run", "任务";
    ColLast => "Last", "最新";
    ColBest => "Best", "最佳";
    ColMeanLastN => "Mean of last N", "最近 N 步均值";
    ColDiff => "Δ vs baseline", "与基线之差";
    LastN => "N", "N";
    Missing => "—", "—";
    NoMatch => "No run matches the filter.", "没有符合筛选条件的任务。";
    ShowMore => "Show more", "显示更多";
    Pause => "Pause", "暂停";
    Resume => "Resume", "继续";
    Stop => "Stop", "停止";
    ReallyStop => "Really stop?", "确认停止?";
    Load => "Load", "加载";
    Commands => "Commands", "控制命令";
    NoCommands => "No commands sent yet.", "还没有发送命令。";
    TryModel => "Try the model", "模型测试";
    AskPlaceholder => "Input for the model (text, or JSON)…", "模型输入(文本或 JSON)…";
    Send => "Send", "发送";
    Output => "Output", "输出";
    Latency => "latency", "延迟";
    Unanswered => "unanswered — is the trainer listening?", "无应答 — 训练程序是否在监听?";
    Cancel => "Cancel", "取消";
    Notes => "Notes", "备注";
    NoNotes => "No tags or notes yet.", "还没有标签或备注。";
    Tags => "Tags", "标签";
    Tag => "Tag", "标签";
    TagsHint => "baseline, lr sweep", "基线, 学习率搜索";
    Group => "Group", "分组";
    NotesHint => "Markdown: **bold**, *italic*, `code`, - lists, [links](https://…)", "Markdown:**粗体**、*斜体*、`代码`、- 列表、[链接](https://…)";
    NotesEdited => "notes edited", "编辑了备注";
    MetaHistory => "History of changes", "修改记录";
    Trainer => "trainer", "训练程序";
    Edit => "Edit", "编辑";
    Save => "Save", "保存";
    AllTags => "All tags", "全部标签";
    GroupBy => "Group by", "分组方式";
    NoGroup => "No grouping", "不分组";
    Ungrouped => "(none)", "(无)";
    AddColumn => "Add column…", "添加列…";
    ConfigCols => "Config", "配置";
    MetricCols => "Metrics", "指标";
    Params => "Parameters", "参数分析";
    ParamsOf => "Each config key of these runs against a metric", "这些任务的每个配置项对比一个指标";
    PickedRuns => "Picked runs", "所选任务";
    Metric => "Metric", "指标";
    LowerBetter => "lower is better", "越低越好";
    HigherBetter => "higher is better", "越高越好";
    ParamsHint => "Config keys that vary, against the metric's latest value; the strongest first, the best run ringed.", "取值不同的配置项对比指标最新值;关联最强的在前,最佳任务以圆圈标出。";
    ParamsNoMetric => "None of these runs has reported this metric yet.", "这些任务都还没有报告该指标。";
    ParamsNoKeys => "Every config value is the same in these runs: nothing to compare.", "这些任务的配置完全相同:没有可对比的参数。";
    RhoHint => "Spearman rank correlation with the metric, of the value or its distance from the best run's", "与指标的 Spearman 秩相关(取值或其与最佳任务取值的距离)";
    EtaHint => "Share of the metric's spread these values explain (on ranks)", "这些取值能解释的指标差异比例(基于秩)";
    RemoveColumn => "Remove column", "移除此列";
    PickAll => "Pick every run shown", "选中显示的全部任务";
    SignIn => "Sign in", "登录";
    SignOut => "Sign out", "退出";
    UserName => "Name", "用户名";
    Password => "Password", "密码";
    SignInTitle => "Sign in to Stepwatch", "登录 Stepwatch";
    SignInFailed => "Wrong name or password", "用户名或密码错误";
    SessionEnded => "Your session ended (signed out or expired): sign in again.", "会话已结束(已退出或已过期),请重新登录。";
    SentBy => "by", "发送者";
    CmdPending => "pending", "等待中";
    CmdAccepted => "accepted", "已接受";
    CmdDone => "done", "完成";
    CmdRejected => "rejected", "已拒绝";
    CmdFailed => "failed", "失败";
    CmdCancelled => "cancelled", "已取消";
    SendFailed => "could not send", "发送失败";
    Launch => "Launch", "启动";
    LaunchJob => "Launch a job", "启动作业";
    Queues => "Queue", "作业队列";
    Queue => "Queue", "队列";
    Job => "Job", "作业";
    Template => "Template", "模板";
    Parameters => "Parameters", "参数";
    Engine => "Engine", "引擎";
    EngineId => "Engine id", "引擎作业 ID";
    Agent => "Agent", "代理";
    Agents => "Agents", "代理";
    AgentAlive => "agent alive", "代理在线";
    AgentGone => "no live agent", "代理离线";
    LiveAgents => "live agent(s)", "个在线代理";
    Attempts => "Attempts", "尝试次数";
    AttemptsHint => "attempts / retries left", "已尝试次数 / 剩余重试次数";
    History => "History", "历史";
    Priority => "Priority", "优先级";
    PriorityHint => "higher runs first", "数值越大越先运行";
    MaxRetries => "Max retries", "最大重试次数";
    Why => "Reason", "原因";
    Age => "Age", "提交于";
    Waiting => "waiting", "排队中";
    Active => "at the engine", "在引擎中";
    Recent => "Recent", "最近完成";
    NoOpenJobs => "No open jobs.", "没有未完成的作业。";
    NoQueues => "No queues are configured: an admin defines them in launch.toml (see docs/LAUNCH.md).", "尚未配置队列:管理员在 launch.toml 中定义(见 docs/LAUNCH.md)。";
    NoAgentBefore => "No live agent serves queue", "没有在线代理服务队列";
    NoAgentAfter => ": the job will wait until one starts.", ":作业将一直等待,直到有代理启动。";
    MayNotSubmit => "Your role may not submit to this queue.", "你的角色无权向此队列提交作业。";
    JobQueued => "queued", "排队中";
    JobClaimed => "claimed", "已认领";
    JobSubmitted => "submitted", "已提交";
    JobRunning => "running", "运行中";
    JobSucceeded => "succeeded", "成功";
    JobFailed => "failed", "失败";
    JobCancelled => "cancelled", "已取消";
    WhyQueued => "waiting for an agent to claim it", "等待代理认领";
    WhyClaimed => "an agent is handing it to its engine", "代理正在将其交给引擎";
    WhySubmitted => "waiting at the engine", "在引擎中等待";
    WhyRunning => "its run has started", "其训练任务已开始";
    CancelRequestedBy => "cancelling, requested by", "正在取消,请求者";
    Retry => "Retry", "重试";
    MoveUp => "Move up (priority +1)", "上移(优先级 +1)";
    MoveDown => "Move down (priority −1)", "下移(优先级 −1)";
    Rerun => "Re-run with changes", "修改后重新运行";
    RerunOf => "re-run of", "重新运行自";
    FreeForm => "Free-form command", "自定义命令";
    FreeFormHint => "(admin: an argv instead of a template)", "(管理员:用 argv 代替模板)";
    Argv => "argv", "argv";
    ArgvHint => "one argument per line: never read by a shell", "每行一个参数:不会经过 shell 解析";
    Cwd => "Working directory", "工作目录";
    Env => "Environment", "环境变量";
    EnvHint => "KEY=VALUE, one per line", "每行一个 KEY=VALUE";
    EnvLine => "each line must read KEY=VALUE", "每行须为 KEY=VALUE";
    Resources => "Resources", "资源";
    Gpus => "GPUs", "GPU 数";
    Cpus => "CPUs", "CPU 数";
    MemoryMb => "Memory (MB)", "内存 (MB)";
    TimeLimitMin => "Time limit (min)", "时间限制 (分钟)";
    AtMost => "at most", "最多";
    WholeNumber => "must be a whole number", "须为整数";
    PickQueue => "choose a queue", "请选择队列";
    PickTemplate => "choose a template", "请选择模板";
    DefaultIs => "default", "默认值";
    PreviewJob => "Preview", "预览";
    Submit => "Submit", "提交";
    PreviewFirst => "Preview shows what will run; Submit follows it.", "先预览将要运行的内容,再提交。";
    FixFields => "Fix the marked fields first.", "请先修正标出的字段。";
    ConfigChanges => "Config changes (old → new)", "配置变更(旧 → 新)";
    NoConfigChanges => "Same config as the run re-run.", "与原任务配置相同。";
    Alerts => "Alerts", "告警";
    Dismiss => "Dismiss", "解除";
    PausedByRule => "paused by rule", "已由规则暂停:";
    StoppedByRule => "stopped by rule", "已由规则停止:";
    LastGood => "last good checkpoint", "最近的正常检查点";
    NoGoodCheckpoint => "no checkpoint saved before this step", "此步之前没有保存检查点";
    HeadNonFinite => "is", "变为";
    HeadAbove => "above its threshold", "高于阈值";
    HeadBelow => "below its threshold", "低于阈值";
    HeadSpike => "spiked", "突增";
    HeadPlateau => "stopped improving", "不再改善";
    HeadStale => "no events for", "无事件已持续";
    HeadGpuIdle => "idle", "空闲";
    AlertFired => "fired", "触发";
    AlertResolved => "resolved", "已解除";
    DeliveryOk => "sent", "已送达";
    DeliveryFailed => "delivery failed", "发送失败";
    Attempt => "attempt", "尝试";
    FiredCount => "fired", "次触发";
    FailedDeliveries => "failed deliveries", "次发送失败";
    ActiveAlerts => "active", "个活跃";
    NoAlerts => "No alerts yet.", "还没有告警。";
    AlertRules => "Rules", "规则";
    SourceConfig => "config", "配置";
    SourceRun => "run", "本任务";
    Remove => "Remove", "移除";
    AddRule => "Add a rule", "添加规则";
    Add => "Add", "添加";
    RuleKind => "Kind", "类型";
    Threshold => "Threshold", "阈值";
    ForPoints => "For (points)", "连续点数";
    Factor => "Factor (× mean)", "倍数(× 均值)";
    Window => "Window", "窗口";
    MinDeltaPct => "Min improvement %", "最小改进 %";
    AfterS => "After (s)", "持续秒数";
    BelowPct => "GPU below %", "GPU 低于 %";
    EventName => "Event", "事件";
    Level => "Level", "级别";
    KindDefault => "kind's default", "按类型默认";
    Action => "Action", "动作";
    NoAction => "none", "无";
    LevelInfo => "info", "提示";
    LevelWarning => "warning", "警告";
    LevelError => "error", "错误";
    MustBeNumber => "must be a number", "须为数字";
    DismissedBy => "dismissed by", "解除者";
    NotifyMe => "Notify me", "通知我";
    NotifyOn => "Notifying", "通知已开启";
    NotifyHint => "Browser notifications when an alert fires", "告警触发时显示浏览器通知";
    NotifyBlocked => "The browser blocks notifications for this page", "浏览器已阻止此页面的通知";
}

/// The language in force, shared through context.
#[derive(Clone, Copy)]
pub struct I18n(pub RwSignal<Lang>);

impl I18n {
    /// Reactive lookup: re-renders when the language changes.
    pub fn t(&self, key: Key) -> &'static str {
        text(self.0.get(), key)
    }

    /// The text of `key` as a view that follows the language. Every text of every view
    /// is this one closure type, so the framework's rendering code for it is compiled
    /// once rather than once per string (a `move || i18n.t(Key::…)` closure each).
    pub fn tr(self, key: Key) -> impl Fn() -> &'static str + Copy + Send + Sync + 'static {
        move || self.t(key)
    }
}

/// The i18n handle from context.
pub fn use_i18n() -> I18n {
    expect_context::<I18n>()
}

/// The browser's preferred language, unless the user chose one before.
pub fn initial_lang() -> Lang {
    let win = window();
    if let Ok(Some(storage)) = win.local_storage() {
        if let Ok(Some(saved)) = storage.get_item("stepwatch.lang") {
            return Lang::from_tag(&saved);
        }
    }
    win.navigator()
        .language()
        .map(|l| Lang::from_tag(&l))
        .unwrap_or(Lang::En)
}

/// Remembers the user's choice and updates `<html lang>`.
pub fn remember_lang(lang: Lang) {
    let win = window();
    if let Ok(Some(storage)) = win.local_storage() {
        let _ = storage.set_item("stepwatch.lang", lang.tag());
    }
    if let Some(el) = win.document().and_then(|d| d.document_element()) {
        let _ = el.set_attribute("lang", lang.tag());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_both_languages() {
        for k in ALL_KEYS {
            assert!(!text(Lang::En, *k).is_empty(), "{k:?} en");
            assert!(!text(Lang::Zh, *k).is_empty(), "{k:?} zh");
        }
        assert_ne!(text(Lang::En, Key::Runs), text(Lang::Zh, Key::Runs));
    }

    #[test]
    fn browser_tags_pick_a_language() {
        assert_eq!(Lang::from_tag("zh-CN"), Lang::Zh);
        assert_eq!(Lang::from_tag("zh-TW"), Lang::Zh);
        assert_eq!(Lang::from_tag("en-US"), Lang::En);
        assert_eq!(Lang::from_tag("de"), Lang::En);
    }
}
