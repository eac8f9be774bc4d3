"""A realistic batch of generated complaints run through the default procedure.

``run_demo`` plays a small company's complaint desk on a ``SimulatedClock``: complaints
arrive through the working days (and a few in the evening, some of them urgent), a cast of
clerks, engineers and managers walks each one through the default rule file, with the
timing steps of the procedure (hand-over to customer service, first response, contacting the
customer, organising the investigation, sample re-inspection, progress reports), and now and
then somebody tries what the rules forbid (the wrong role, the person complained about,
resolving before the general manager approved, approving one's own plan, leaving out a
required field). Every such attempt is a real ``engine.fire`` call that the engine refuses.

The clocks run as in production: a ``Scheduler`` ticks whenever the simulated clock passes a
pending deadline (at the next five-minute poll, or at the next step if that comes first), so
warnings and breaches fire, raise severities, reassign and write the outbox. People are
sometimes late; the scheduler host is down for one afternoon and catches up afterwards; up
to two disputed or reopened complaints get an extension agreed with the customer. The
simulation stops at a horizon, so the complaints received last are still in progress, and
ends with a deep verification.
Everything is drawn from one ``random.Random(seed)``: the same seed gives the same summary.
"""

from __future__ import annotations

import heapq
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from complaintflow.actor import Actor
from complaintflow.clock import SimulatedClock
from complaintflow.engine import CommittedEvent, Engine
from complaintflow.errors import (
    ApprovalMissing,
    FieldProblem,
    InvalidInput,
    MissingFields,
    RoleNotAllowed,
    SeparationOfDuties,
    TransitionRefused,
)
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.timing import build_calendars
from complaintflow.scheduler import Scheduler, TickReport
from complaintflow.states.guards import GUARD_ORDER
from complaintflow.timers import Consent
from complaintflow.views import Complaint
from complaintflow.worktime import CalendarSpec, WorkingCalendar, WorkInterval

__all__ = [
    "DEMO_LOADED_BY",
    "DEMO_START",
    "REFUSAL_KINDS",
    "DemoSummary",
    "Progress",
    "after_office_hours",
    "is_demo_database",
    "office_calendar",
    "office_moment",
    "open_demo_engine",
    "remove_sqlite_database",
    "run_demo",
]

ZONE = ZoneInfo("Asia/Shanghai")
#: Monday 2 March 2026, 09:00 in Shanghai.
DEMO_START = datetime(2026, 3, 2, 9, 0, tzinfo=ZONE)
#: ``loaded_by`` of the demo's rule set row; marks a database as the demo's own.
DEMO_LOADED_BY = "complaintflow demo"
WORKDAY_HOURS = 8.0  # 8:30-12:00 and 13:00-17:30
#: The demo stops this many working days after the last complaint arrived.
HORIZON_DAYS = 12
#: The simulated scheduler polls on this grid (``scheduler run`` with a 5-minute interval).
SCHEDULER_POLL = timedelta(minutes=5)
#: The scheduler host is patched one afternoon (local times); it catches up afterwards.
DOWNTIME = (datetime(2026, 3, 11, 14, 0, tzinfo=ZONE), datetime(2026, 3, 11, 16, 30, tzinfo=ZONE))
#: Without anything due, the scheduler still ticks this often (periodic reviews).
IDLE_TICK = timedelta(hours=1)
#: How many extensions the clerks agree with customers (on disputed or reopened complaints).
MAX_EXTENSIONS = 2
EXTENSION_DAYS = 5

#: What the demo tries on purpose, and the guard that must refuse it.
REFUSAL_KINDS: Mapping[str, str] = {
    "wrong_role": "role",
    "recusal": "separation_of_duties",
    "four_eyes": "separation_of_duties",
    "missing_fields": "fields",
    "missing_approval": "approval",
}

#: ``progress(phase, done, total)``; phases ``simulating`` (simulated hours) and
#: ``verifying`` (complaints).
Progress = Callable[[str, int, int], None]

# -- the cast -------------------------------------------------------------------------------

DESK = Actor("xu.jing", ["employee"], "admin")  # 前台 许静
SALES = (Actor("lin.tao", ["sales_rep"], "sales"), Actor("gao.yang", ["sales_rep"], "sales"))
CLERKS = (
    Actor("li.na", ["customer_service"], "customer_service"),
    Actor("wang.fang", ["customer_service"], "customer_service"),
    Actor("zhao.min", ["customer_service"], "customer_service"),
)
QA = (Actor("chen.gang", ["quality"], "quality"), Actor("yang.li", ["quality"], "quality"))
TECH = (Actor("sun.hao", ["technical"], "technical"), Actor("ma.jun", ["technical"], "technical"))
SERVICE = (
    Actor("zhou.bin", ["after_sales"], "after_sales"),
    Actor("wu.lei", ["after_sales"], "after_sales"),
)
QA_MANAGER = Actor("huang.min", ["department_manager"], "quality")
SERVICE_MANAGER = Actor("zheng.wei", ["department_manager"], "after_sales")
CS_MANAGER = Actor("song.jie", ["department_manager"], "customer_service")
# the deputy GM also runs a department, so he may draft a plan and then be tempted to sign it
DEPUTY_GM = Actor("qian.yong", ["department_manager", "general_manager"], "management")
GM = Actor("liu.jianguo", ["general_manager"], "management")
CHAIRMAN = Actor("ma.dong", ["top_management"], "management")
QUALITY_HEAD = Actor("wu.hua", ["quality_manager"], "quality")
ARCHIVIST = Actor("he.xia", ["archivist"], "admin")

#: Staff a customer may complain about (service behaviour, staff conduct).
COMPLAINED_ABOUT = (*CLERKS, *SERVICE, *SALES, QA[0])

# department → (who is named handler, who writes the investigation report if the handler
# may not)
DEPARTMENTS: Mapping[str, tuple[tuple[Actor, ...], Actor]] = {
    "quality": (QA, QA_MANAGER),
    "technical": (TECH, QA_MANAGER),
    "production": (QA, QA_MANAGER),
    "after_sales": (SERVICE, SERVICE_MANAGER),
    "customer_service": (CLERKS, CS_MANAGER),
    "sales": (SALES, CS_MANAGER),
    "logistics": (CLERKS, CS_MANAGER),
}

# -- the data -------------------------------------------------------------------------------


def _texts(text: str) -> tuple[str, ...]:
    """``"a|b|c"`` -> ("a", "b", "c"): keeps the word lists below compact."""
    return tuple(part.strip() for part in text.split("|"))


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """``"张:zhang 王:wang"`` -> (("张", "zhang"), ("王", "wang"))."""
    return tuple((a, b) for a, _, b in (word.partition(":") for word in text.split()))


SURNAMES = _pairs(
    "张:zhang 王:wang 李:li 赵:zhao 刘:liu 陈:chen 杨:yang 黄:huang 周:zhou 吴:wu 徐:xu "
    "孙:sun 胡:hu 朱:zhu 高:gao 林:lin 何:he 郭:guo 马:ma 罗:luo"
)
GIVEN = _pairs(
    "伟:wei 娜:na 敏:min 静:jing 丽:li 强:qiang 磊:lei 军:jun 洋:yang 勇:yong 艳:yan 杰:jie "
    "涛:tao 明:ming 超:chao 秀英:xiuying 建华:jianhua 志强:zhiqiang 海燕:haiyan "
    "晓东:xiaodong 文博:wenbo 雪梅:xuemei"
)
STEMS = _pairs(
    "华东:huadong 鑫达:xinda 恒信:hengxin 瑞丰:ruifeng 天成:tiancheng 华锐:huarui "
    "金桥:jinqiao 宏远:hongyuan 联创:lianchuang 博远:boyuan 永泰:yongtai 东方:dongfang "
    "中科:zhongke 新宇:xinyu 盛世:shengshi 蓝海:lanhai"
)
TRADES = _texts(
    "机电|电子科技|精密仪器|自动化设备|包装材料|电力设备|新材料科技|汽车零部件|"
    "医疗器械|五金制品|建材|智能装备"
)
# city, the prefix of company names there, districts
CITIES = (
    ("上海市", "上海", _texts("浦东新区|闵行区|嘉定区|松江区")),
    ("深圳市", "深圳市", _texts("南山区|宝安区|龙岗区")),
    ("苏州市", "苏州", _texts("工业园区|吴中区|相城区")),
    ("杭州市", "杭州", _texts("滨江区|余杭区|萧山区")),
    ("成都市", "成都", _texts("高新区|武侯区|双流区")),
    ("武汉市", "武汉", _texts("东湖高新区|江夏区|汉阳区")),
    ("北京市", "北京", _texts("海淀区|朝阳区|大兴区")),
    ("广州市", "广州", _texts("天河区|黄埔区|番禺区")),
    ("天津市", "天津", _texts("滨海新区|西青区")),
    ("南京市", "南京", _texts("江宁区|栖霞区")),
    ("西安市", "西安", _texts("雁塔区|高新区")),
    ("重庆市", "重庆", _texts("渝北区|江北区")),
)
ROADS = _texts(
    "张江路|科技园路|建设大道|人民路|中山路|解放路|长江路|高新大道|工业大道|创业路|金科路|星湖街"
)
MOBILE_PREFIXES = _texts(
    "130|131|132|133|135|136|137|138|139|150|151|152|155|156|157|158|159|180|181|182|185|186|"
    "187|188|189"
)


@dataclass(frozen=True)
class Product:
    name: str
    models: tuple[str, ...]
    batch_prefix: str
    defects: tuple[str, ...]
    hazardous: bool = False


PRODUCTS = (
    Product(
        "YE3 三相异步电机",
        _texts("YE3-132M-4|YE3-160L-4|YE3-200L-6"),
        "MT",
        _texts("运行时异响, 温升偏高|轴承过热, 运行约200小时后卡死|接线盒进水导致绝缘电阻下降"),
    ),
    Product(
        "通用变频器",
        _texts("VFD-G7-7R5|VFD-G7-015|VFD-G7-030"),
        "VF",
        _texts(
            "上电后报过流故障 OC1, 无法启动|散热风扇不转, 频繁过热停机|显示面板花屏, 参数无法保存"
        ),
    ),
    Product(
        "PLC 控制器",
        _texts("CP-1214C|CP-1215C"),
        "PL",
        _texts("通讯模块间歇性掉线|固件升级后输出点误动作"),
    ),
    Product(
        "不锈钢球阀",
        _texts("Q41F-16P DN50|Q41F-16P DN80"),
        "QV",
        _texts("阀体铸造砂眼渗漏|密封面磨损, 关闭不严"),
    ),
    Product(
        "磷酸铁锂电池组",
        _texts("LFP-48V100Ah|LFP-51.2V200Ah"),
        "LB",
        _texts("部分电芯鼓包|BMS 误报过压后切断输出|充电时外壳局部发烫"),
        hazardous=True,
    ),
    Product(
        "LED 工矿灯",
        _texts("GK-100W|GK-150W|GK-200W"),
        "LD",
        _texts("批量出现频闪|灯罩开裂, 防护等级不达标"),
    ),
    Product(
        "液压油缸",
        _texts("HSG-80/45-500|HSG-100/55-800"),
        "HC",
        _texts("活塞杆镀铬层起皮|油封渗油, 保压失效"),
    ),
    Product(
        "工业除湿机",
        _texts("CFZ-10/S|CFZ-20/S"),
        "DH",
        _texts("制冷效果差, 压缩机频繁启停|排水泵故障导致漏水"),
    ),
    Product(
        "电动叉车控制器",
        _texts("FC-2408|FC-4815"),
        "FC",
        _texts("爬坡时控制器过热保护|急停回路偶发失效"),
        hazardous=True,
    ),
)
ISSUES = {
    "service_behaviour": _texts(
        "售后工程师约定上门时间后未到场, 电话无人接听|"
        "客服人员态度生硬, 多次推诿不予处理|"
        "维修后同一故障再次出现, 工程师拒绝再次上门|报修三天无人回复"
    ),
    "staff_conduct": _texts(
        "业务员承诺的交货期未兑现, 且要求额外加急费|工作人员在客户现场言语不当|"
        "业务员私下承诺赔偿, 事后不予认可"
    ),
    "non_quality": _texts(
        "发货延误一周, 影响客户生产计划|发票信息错误, 多次要求更正未果|"
        "到货包装破损, 外箱受潮|实际到货数量与送货单不符"
    ),
    "other": _texts("产品说明书与实物不符, 无法按说明安装|官网公布的服务热线长期占线"),
}
USAGE = _texts("产线连续运行|户外工地|仓储物流|高温车间|洁净车间")
LOSSES = _texts("停线损失及返工费用|误工及差旅费用|客户终端退货损失|备件采购费用")
#: channel -> weight
CHANNELS = {
    "phone": 34,
    "email": 16,
    "online": 10,
    "sales_rep": 14,
    "dealer": 9,
    "visit": 5,
    "letter": 3,
    "fax": 2,
    "authority": 7,
}
#: authority forwarding a complaint -> the flag it sets
AUTHORITY_FLAGS: Mapping[str, str | None] = {
    "consumer_association": "consumer_association",
    "media": "media_involved",
    "lawyer": "lawyer_involved",
    "government": "government_involved",
    "regulator": None,
}
#: category -> (departments, weights)
ASSIGNMENT = {
    "product_quality": (("quality", "technical", "production"), (5, 3, 2)),
    "service_behaviour": (("after_sales", "customer_service"), (3, 2)),
    "staff_conduct": (("sales", "customer_service", "after_sales"), (2, 2, 1)),
    "non_quality": (("logistics", "sales"), (3, 1)),
    "other": (("customer_service", "technical"), (2, 1)),
}
#: root cause -> finding, weight
CAUSES = {
    "process": ("装配工序扭矩未按作业指导书执行", 25),
    "raw_material": ("供应商来料批次性能不达标", 20),
    "inspection": ("出厂检验漏检", 15),
    "transport_storage": ("运输过程中受潮及碰撞", 12),
    "customer_misuse": ("客户超负荷使用且未按说明书维护", 15),
    "design": ("设计余量不足, 高温工况下失效", 8),
    "other": ("多因素叠加, 无单一主因", 5),
}
MEASURE_TEXT = {
    "repair": "免费维修",
    "replace": "更换新品",
    "return": "退货退款",
    "apology": "书面致歉",
    "compensation": "经济补偿",
    "explanation": "书面解释说明",
    "technical_improvement": "工艺改进",
}
REJECTIONS = _texts("非本公司产品|超出质保期且客户拒绝付费维修|重复投诉, 已合并处理")
RESULTS = _texts(
    "已按方案完成处置, 客户签收确认|更换件已发出并完成安装调试|"
    "补偿款已支付, 书面答复已寄出|已上门处理并出具服务报告"
)
FEEDBACK = _texts(
    "已电话告知客户处理结果, 客户表示认可|已发送书面答复函并经客户签收|业务员上门说明处理结果"
)
DISPUTES = _texts("客户认为赔偿金额过低|客户不认可原因分析结论|客户要求更换而非维修")
SATISFIED_NOTES = _texts("客户对处理结果满意|设备运行正常, 客户认可|客户表示基本满意, 希望加快响应")
DISSATISFIED_NOTES = _texts("故障再次出现|客户认为处理周期过长|补偿未达客户预期")
RESPONSES = _texts(
    "已电话回复客户, 告知已受理并将安排处理|已邮件回复客户, 确认收到投诉|"
    "已短信告知客户投诉编号及处理时限"
)
CONTACTS = _texts(
    "处理人已致电客户了解故障详情|已与客户约定现场检查时间|已请客户提供照片及运行记录"
)
VISITS = _texts("已上门查看设备运行情况并拍照取证|现场核查确认故障现象属实|现场检测安装及接线情况")
REINSPECTIONS = _texts("确认不合格|未发现异常|部分样品不合格")
PROGRESS = _texts("已告知客户调查进展及预计完成时间|已向客户通报样品复检进度")

# -- rates of the deliberate mistakes ------------------------------------------------------

P_WRONG_ROLE = 0.03
P_RECUSAL_ATTEMPT = 0.3
P_FOUR_EYES = 0.2
P_EARLY_RESOLVE = 0.3
P_MISSING_FIELDS = 0.05
P_REJECT = 0.05
P_DISPUTE = 0.1
P_DISSATISFIED = (0.12, 0.06, 0.0)  # by handling round
# -- timing ---------------------------------------------------------------------------------
P_AFTER_HOURS = 0.08  # arrives in the evening (e-mail, online form)
P_URGENT_AFTER_HOURS = 0.4  # ... and is urgent (safety issues always are)
P_SAMPLE = 0.35  # a product-quality complaint whose sample is sent in for re-inspection
P_PROGRESS_REPORT = 0.85  # the customer is told how the investigation goes


class DemoError(RuntimeError):
    """The simulation met an outcome the default procedure should not produce."""


def is_demo_database(path: str | Path) -> bool:
    """Whether ``path`` is absent, empty, or a SQLite database only the demo ever opened
    (so that recreating it cannot destroy real complaints)."""
    file = Path(path)
    if not file.exists():
        return True
    if file.is_file() and file.stat().st_size == 0:
        return True
    try:
        conn = sqlite3.connect(file.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT DISTINCT loaded_by FROM rulesets").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return all(row[0] == DEMO_LOADED_BY for row in rows)


def remove_sqlite_database(path: str | Path) -> None:
    """Delete a SQLite database file with its ``-wal`` and ``-shm`` companions."""
    base = Path(path)
    for suffix in ("", "-wal", "-shm", "-journal"):
        base.with_name(base.name + suffix).unlink(missing_ok=True)


def open_demo_engine(path: str | Path) -> tuple[Engine, SimulatedClock]:
    """A fresh demo database at ``path`` (any old one removed) on a clock at ``DEMO_START``.
    Check ``is_demo_database`` first if ``path`` might hold real complaints."""
    remove_sqlite_database(path)
    clock = SimulatedClock(DEMO_START)
    engine = Engine.open(f"sqlite:///{Path(path)}", clock=clock, loaded_by=DEMO_LOADED_BY)
    return engine, clock


# -- office time ----------------------------------------------------------------------------


def office_calendar(rules: RuleSet) -> WorkingCalendar:
    """The rule set's first working calendar (the default rules: office hours in China with
    public holidays and make-up days), else the same hours Monday to Friday."""
    for calendar in build_calendars(rules.definition).values():
        return calendar
    return WorkingCalendar(
        CalendarSpec(
            "demo",
            "Asia/Shanghai",
            {
                day: (WorkInterval(time(8, 30), time(12)), WorkInterval(time(13), time(17, 30)))
                for day in range(5)
            },
            country=None,
        )
    )


def after_office_hours(calendar: WorkingCalendar, moment: datetime, hours: float) -> datetime:
    """``hours`` of office time after ``moment`` (to the minute), in the demo's zone."""
    return calendar.add_working(moment, round(hours * 60)).instant.astimezone(ZONE)


def office_moment(calendar: WorkingCalendar, moment: datetime) -> datetime:
    """``moment`` if the office is open then, else the next opening."""
    return calendar.next_working_instant(moment).astimezone(ZONE)


# -- the summary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSummary:
    """What a demo run did and what it left behind (no wall-clock data: deterministic)."""

    count: int
    seed: int
    states: Mapping[str, int]
    severities: Mapping[str, int]
    refusals_by_check: Mapping[str, int]
    refusals_by_kind: Mapping[str, int]
    transitions: int
    approvals: int
    signed_replies: int
    disputes: int
    reopens: int
    closed: int
    rejected: int
    verified_ok: bool
    verified_events: int
    verified_complaints: int
    findings: int
    started_at: datetime
    ended_at: datetime
    #: timing steps fired by people (respond, hand_over, contact_customer, ...) by trigger
    timing_steps: Mapping[str, int] = field(default_factory=dict)
    #: warnings and breaches the scheduler fired, by timer: {"warnings": n, "breaches": n}
    clocks: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: events written by the clocks rather than by people, by type
    clock_events: Mapping[str, int] = field(default_factory=dict)
    ticks: int = 0
    max_lateness: timedelta = timedelta(0)
    notifications: int = 0
    reviews: int = 0
    extensions: int = 0
    severity_raised: int = 0
    escalated: int = 0
    urgent_after_hours: int = 0
    verified_deep: bool = True

    @property
    def refusals(self) -> int:
        return sum(self.refusals_by_check.values())

    @property
    def in_progress(self) -> int:
        return self.count - self.closed - self.rejected

    @property
    def span(self) -> timedelta:
        return self.ended_at - self.started_at

    @property
    def warnings(self) -> int:
        return sum(c.get("warnings", 0) for c in self.clocks.values())

    @property
    def breaches(self) -> int:
        return sum(c.get("breaches", 0) for c in self.clocks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "seed": self.seed,
            "states": dict(self.states),
            "severities": dict(self.severities),
            "refusals": self.refusals,
            "refusals_by_check": dict(self.refusals_by_check),
            "refusals_by_kind": dict(self.refusals_by_kind),
            "transitions": self.transitions,
            "timing_steps": dict(self.timing_steps),
            "approvals": self.approvals,
            "signed_replies": self.signed_replies,
            "disputes": self.disputes,
            "reopens": self.reopens,
            "closed": self.closed,
            "rejected": self.rejected,
            "in_progress": self.in_progress,
            "urgent_after_hours": self.urgent_after_hours,
            "clocks": {
                "warnings": self.warnings,
                "breaches": self.breaches,
                "by_timer": {name: dict(n) for name, n in self.clocks.items()},
                "events": dict(self.clock_events),
                "ticks": self.ticks,
                "max_lateness_seconds": self.max_lateness.total_seconds(),
                "extensions": self.extensions,
                "severity_raised": self.severity_raised,
                "escalated": self.escalated,
            },
            "outbox": {"notifications": self.notifications, "reviews": self.reviews},
            "verification": {
                "ok": self.verified_ok,
                "deep": self.verified_deep,
                "events": self.verified_events,
                "complaints": self.verified_complaints,
                "findings": self.findings,
            },
            "simulated": {
                "start": self.started_at.astimezone(ZONE).isoformat(),
                "end": self.ended_at.astimezone(ZONE).isoformat(),
                "days": round(self.span / timedelta(days=1), 2),
            },
        }


# -- the simulation -------------------------------------------------------------------------


@dataclass
class _Case:
    number: str
    complaint: Complaint
    complained_about: Actor | None
    clerk: Actor
    customer: str
    recusal_tried: bool = False
    approved: bool = False  # the GM approved the latest plan
    signed: bool = False  # top management signed the reply since it was resolved
    extended: bool = False


@dataclass
class _Counters:
    transitions: int = 0
    approvals: int = 0
    signed_replies: int = 0
    disputes: int = 0
    reopens: int = 0
    closed: int = 0
    rejected: int = 0
    extensions: int = 0
    urgent_after_hours: int = 0
    severity_raised: int = 0
    escalated: int = 0
    ticks: int = 0
    reviews: int = 0
    max_lateness: timedelta = timedelta(0)
    by_check: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    timing: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    breaches: Counter[str] = field(default_factory=Counter)
    clock_events: Counter[str] = field(default_factory=Counter)


#: Self-loop triggers of the default rules that stop (or start) a clock.
TIMING_STEPS = (
    "hand_over",
    "respond",
    "contact_customer",
    "organise_investigation",
    "visit_site",
    "receive_sample",
    "record_reinspection",
    "report_progress",
)


class _Simulation:
    def __init__(self, engine: Engine, clock: SimulatedClock, rng: random.Random) -> None:
        self.engine = engine
        self.calendar = office_calendar(engine.rules)
        self.clock = clock
        self.rng = rng
        self.n = _Counters()
        self.cases: list[_Case] = []
        self.by_number: dict[str, _Case] = {}
        self.scheduler = Scheduler(engine, worker="demo")
        self.last_tick: datetime | None = None
        self.downtime = tuple(moment.astimezone(UTC) for moment in DOWNTIME)

    # -- the clocks -----------------------------------------------------------------------

    def observe(self, committed: CommittedEvent) -> None:
        """Engine observer: keeps each case's severity current when a clock raised it, and
        counts what the clocks wrote."""
        event = committed.event
        if event.type in ("submitted", "transition"):
            return
        self.n.clock_events[event.type] += 1
        case = self.by_number.get(event.number)
        payload = event.payload
        if event.type == "timer_warning":
            self.n.warnings[str(payload["timer"])] += 1
        elif event.type == "timer_breached":
            self.n.breaches[str(payload["timer"])] += 1
            actions = payload.get("actions") or {}
            if actions.get("reassign"):
                self.n.escalated += 1
            if (
                actions.get("raise_severity")
                and case is not None
                and case.complaint.severity != payload.get("severity")
            ):
                self.n.severity_raised += 1
        if case is not None and payload.get("severity") is not None:
            case.complaint = replace(
                case.complaint, severity=str(payload["severity"]), version=event.seq
            )

    def tick(self) -> TickReport:
        report = self.scheduler.tick()
        self.last_tick = self.clock()
        self.n.ticks += 1
        self.n.reviews += report.reviews
        self.n.max_lateness = max(self.n.max_lateness, report.max_lateness)
        return report

    def poll_after(self, moment: datetime) -> datetime:
        """The scheduler's first poll at or after ``moment`` (none while it is down)."""
        steps = -((DEMO_START - moment) // SCHEDULER_POLL)  # ceiling division
        at = DEMO_START.astimezone(UTC) + steps * SCHEDULER_POLL
        down_from, down_until = self.downtime
        return down_until if down_from <= at < down_until else at

    def advance(self, target: datetime) -> None:
        """Move the clock to ``target``; on the way the scheduler fires every deadline that
        falls due, at its next poll (or at ``target`` if that comes first)."""
        target = max(target.astimezone(UTC), self.clock())
        down_from, down_until = self.downtime
        pending = self.engine.next_due()
        while pending is not None and pending <= target:
            at = min(max(self.clock(), self.poll_after(pending)), target)
            if down_from <= at < down_until:
                break  # the scheduler is down; it catches up when it is back
            self.clock.set(at)
            report = self.tick()
            if report.fired == 0 and report.next_due is not None and report.next_due <= at:
                break  # nothing more can fire now
            pending = report.next_due
        self.clock.set(target)
        idle = self.last_tick is None or target - self.last_tick >= IDLE_TICK
        if idle and not down_from <= target < down_until:
            self.tick()

    # -- helpers --------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock().astimezone(ZONE)

    def office_hours(self, low: float, high: float) -> datetime:
        return after_office_hours(self.calendar, self.now(), self.rng.uniform(low, high))

    def working_days(self, low: float, high: float) -> datetime:
        return self.office_hours(low * WORKDAY_HOURS, high * WORKDAY_HOURS)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def tempted(self, kind: str, p: float) -> bool:
        """Whether somebody makes mistake ``kind`` now: at rate ``p``, and surely at its
        first opportunity, so that even a short run shows every kind."""
        return self.rng.random() < p or not self.n.by_kind[kind]

    def pick(
        self, pool: tuple[Actor, ...], case: _Case | None, about: Actor | None = None
    ) -> Actor:
        """Anyone from ``pool`` but the person complained about."""
        excluded = case.complained_about if case is not None else about
        allowed = [a for a in pool if a != excluded]
        return self.rng.choice(allowed)

    def after(self, base: datetime, low: float, high: float) -> datetime:
        """Between ``low`` and ``high`` office hours after ``base``."""
        return after_office_hours(self.calendar, base, self.rng.uniform(low, high))

    def may(self, actor: Actor, trigger: str) -> bool:
        """Whether ``actor`` holds a role ``trigger`` allows (from the rule file)."""
        transitions = self.engine.rules.transitions_by_trigger[trigger]
        return any(actor.has_any(t.roles) for t in transitions)

    def fire(
        self, case: _Case, trigger: str, actor: Actor, data: Mapping[str, Any] | None = None
    ) -> Complaint:
        self.recusal(case, trigger)
        case.complaint = self.engine.fire(case.number, trigger, actor, data)
        self.n.transitions += 1
        if trigger in TIMING_STEPS:
            self.n.timing[trigger] += 1
        return case.complaint

    def refuse(
        self,
        kind: str,
        expected: type[TransitionRefused],
        case: _Case,
        trigger: str,
        actor: Actor,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Try what the rules forbid; only the expected refusal is acceptable."""
        try:
            self.engine.fire(case.number, trigger, actor, data)
        except expected as exc:
            if exc.check != REFUSAL_KINDS[kind]:
                raise DemoError(
                    f"{case.number}: {trigger!r} by {actor.id} refused by "
                    f"{exc.check!r}, expected {REFUSAL_KINDS[kind]!r}"
                ) from exc
            self.n.by_check[exc.check] += 1
            self.n.by_kind[kind] += 1
            return
        raise DemoError(
            f"{case.number}: {trigger!r} by {actor.id} should have been refused ({kind})"
        )

    def recusal(self, case: _Case, trigger: str) -> None:
        """Sometimes the person complained about reaches for the complaint first."""
        person = case.complained_about
        if person is None or case.recusal_tried:
            return
        if self.may(person, trigger) and self.tempted("recusal", P_RECUSAL_ATTEMPT):
            case.recusal_tried = True
            self.refuse("recusal", SeparationOfDuties, case, trigger, person)

    def wrong_role(
        self, case: _Case, trigger: str, actor: Actor, data: Mapping[str, Any] | None = None
    ) -> None:
        if self.tempted("wrong_role", P_WRONG_ROLE):
            self.refuse("wrong_role", RoleNotAllowed, case, trigger, actor, data)

    def missing(
        self, case: _Case, trigger: str, actor: Actor, data: Mapping[str, Any], left_out: str
    ) -> None:
        # only a field the complaint does not hold yet can be missing
        if case.complaint.fields.get(left_out) not in (None, "", ()):
            return
        if self.tempted("missing_fields", P_MISSING_FIELDS):
            partial = {k: v for k, v in data.items() if k != left_out}
            self.refuse("missing_fields", MissingFields, case, trigger, actor, partial)

    # -- the data of one complaint ---------------------------------------------------------

    def person(self) -> tuple[str, str]:
        surname, s_py = self.rng.choice(SURNAMES)
        given, g_py = self.rng.choice(GIVEN)
        return surname + given, f"{g_py}.{s_py}"

    def complaint_fields(self, channel: str) -> tuple[dict[str, Any], Actor | None]:
        rng = self.rng
        city, short, districts = rng.choice(CITIES)
        stem, stem_py = rng.choice(STEMS)
        contact, contact_py = self.person()
        individual = rng.random() < 0.12
        customer = (
            f"{contact} (个人客户)" if individual else f"{short}{stem}{rng.choice(TRADES)}有限公司"
        )
        domain = rng.choice(("qq.com", "163.com", "126.com")) if individual else f"{stem_py}.com.cn"
        product = rng.choice(PRODUCTS)
        category = rng.choices(
            ("product_quality", "service_behaviour", "staff_conduct", "non_quality", "other"),
            (66, 14, 7, 9, 4),
        )[0]
        quantity = rng.choice((1, 2, 5, 10, 20, 50, 100, 200, 500))
        fields: dict[str, Any] = {
            "customer_name": customer,
            "contact_person": contact,
            "phone": rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}",
            "email": f"{contact_py}@{domain}",
            "address": f"{city}{rng.choice(districts)}{rng.choice(ROADS)}{rng.randint(1, 999)}号",
            "channel": channel,
            "product_name": product.name,
            "product_model": rng.choice(product.models),
            "batch_no": f"{product.batch_prefix}{rng.randint(2507, 2602)}-{rng.randint(1, 40):02d}",
            "purchase_date": (date(2025, 6, 1) + timedelta(days=rng.randrange(270))).isoformat(),
            "quantity": quantity,
            "category": category,
        }
        demand: list[str] = []
        complained_about: Actor | None = None
        if category == "product_quality":
            defective = max(1, round(quantity * rng.uniform(0.02, 0.6)))
            fields["defective_quantity"] = min(defective, quantity)
            fields["description"] = (
                f"{product.name} {fields['product_model']}: {rng.choice(product.defects)}"
            )
            fields["usage_scenario"] = rng.choice(USAGE)
            demand = rng.sample(("repair", "replace", "return", "onsite_visit"), rng.randint(1, 2))
            if product.hazardous and rng.random() < 0.4:
                fields["safety_issue"] = True
            if rng.random() < 0.05:
                fields["multiple_batches"] = True
            if rng.random() < 0.05:
                fields["repeated_repairs"] = True
        else:
            fields["description"] = rng.choice(ISSUES[category])
            demand = rng.sample(("apology", "explanation", "onsite_visit"), rng.randint(1, 2))
            if category in ("service_behaviour", "staff_conduct") and rng.random() < 0.6:
                complained_about = rng.choice(COMPLAINED_ABOUT)
                fields["person_complained_about"] = complained_about.id
        if rng.random() < 0.6:
            bucket = rng.choices(((200, 3000), (3000, 10000), (10000, 120000)), (50, 35, 15))[0]
            fields["claimed_amount"] = str(round(rng.uniform(*bucket) / 10) * 10)
            if rng.random() < 0.25:
                demand.append("compensation")
            fields["loss_description"] = rng.choice(LOSSES)
        fields["customer_demand"] = demand
        if channel == "authority":
            body = rng.choice(tuple(AUTHORITY_FLAGS))
            fields["forwarded_by"] = body
            flag = AUTHORITY_FLAGS[body]
            if flag:
                fields[flag] = True
        elif rng.random() < 0.03:
            fields["media_involved"] = True
        if rng.random() < 0.03:
            fields["escalation_risk"] = True
        return fields, complained_about

    # -- one complaint's story -------------------------------------------------------------

    def story(self) -> Iterator[datetime]:
        """Walk one complaint; each ``yield`` hands back when the next step happens."""
        rng = self.rng
        arrived = self.now()
        after_hours = not self.calendar.is_working_instant(arrived)
        channel = rng.choices(tuple(CHANNELS), tuple(CHANNELS.values()))[0]
        fields, about = self.complaint_fields(channel)
        urgent = after_hours and (
            bool(fields.get("safety_issue")) or self.chance(P_URGENT_AFTER_HOURS)
        )
        if urgent:
            fields["urgent"] = True
            self.n.urgent_after_hours += 1
        if after_hours:  # the customer-service mailbox, read by whoever is on duty
            receiver = rng.choice([c for c in CLERKS if c != about])
        elif channel in ("sales_rep", "dealer"):
            receiver = self.pick(SALES, case=None, about=about)
        else:
            receiver = self.pick((DESK, *CLERKS), case=None, about=about)
        complaint = self.engine.submit(fields, receiver)
        clerk = rng.choice([c for c in CLERKS if c != about])
        case = _Case(complaint.number, complaint, about, clerk, fields["customer_name"])
        self.cases.append(case)
        self.by_number[case.number] = case

        # 接获 → 登记: hand over within 30 minutes, respond within an hour (urgent after-hours
        # complaints by the clerk on duty, the others at the next opening: late), register
        # within two office hours, read back to the customer
        steps: list[tuple[datetime, str]] = []
        record_at = self.after(arrived, 0.2, 1.5)
        if not receiver.has_any(("customer_service",)):
            handed = arrived + timedelta(minutes=rng.uniform(3, 33))
            steps.append((handed, "hand_over"))
            record_at = max(record_at, handed + timedelta(minutes=5))
        if urgent:
            respond_at = arrived + timedelta(minutes=rng.uniform(10, 55))
        elif after_hours:
            respond_at = self.after(arrived, 0.1, 1)
        else:
            respond_at = arrived + timedelta(hours=rng.uniform(0.1, 1.25))
        confirm_at = self.after(record_at, 0.5, 3)
        if respond_at < confirm_at:
            steps.append((respond_at, "respond"))
        steps.append((record_at, "record"))
        for moment, step in sorted(steps):
            yield moment
            if step == "hand_over":
                self.fire(case, "hand_over", receiver)
            elif step == "respond":
                note = rng.choice(RESPONSES)
                self.fire(case, "respond", clerk, {"response_note": note})
            else:
                record = {
                    "readback_confirmed": True,
                    "serial_number": f"SN{rng.randrange(10**9):09d}",
                }
                self.wrong_role(case, "record", rng.choice(SALES), record)
                self.missing(case, "record", clerk, record, "readback_confirmed")
                self.fire(case, "record", clerk, record)

        yield confirm_at
        if self.chance(P_REJECT):
            self.fire(case, "reject", clerk, {"rejection_reason": rng.choice(REJECTIONS)})
            self.n.rejected += 1
            return
        department = self.department(fields)
        handlers, manager = DEPARTMENTS[department]
        handler = self.pick(handlers, case)
        confirm = {"responsible_department": department, "handler": handler.id}
        self.wrong_role(case, "confirm", rng.choice(SERVICE), confirm)
        self.fire(case, "confirm", clerk if rng.random() < 0.8 else CS_MANAGER, confirm)

        # 确认 → 调查分析: contact the customer within 2 working hours, organise the
        # investigation within 2 working days (a special team within 1 for major ones),
        # visit on site within 2, re-inspect a sample within 3, tell the customer how it
        # goes after 3, report within 5 (major: 3); now and then somebody is late
        reporter = handler if handler.has_any(("quality", "technical")) else manager
        yield from self.investigate(case, handler, manager, reporter, fields)
        round_ = 0
        while True:
            yield self.office_hours(1, 18)  # a plan within 2 working days (general)
            needs_approval = self.plan(case, handler, fields)
            case.approved = False
            if needs_approval:
                yield self.office_hours(1, 9)
                self.approve(case)
            if case.complaint.severity == "major":
                yield self.office_hours(2, 10)  # carried out within 1 working day
            else:
                yield self.working_days(1, 3)
            if self.needs_approval(case) and not case.approved:
                self.approve(case)  # the severity was raised by a breach meanwhile
                yield self.office_hours(0.5, 2)
            self.resolve(case)
            case.signed = False
            if case.complaint.severity == "major":
                yield self.office_hours(1, 6)
                self.sign(case)
            yield self.office_hours(1, 14)  # result fed back within two working days
            if case.complaint.severity == "major" and not case.signed:
                self.sign(case)
            feeder = clerk if rng.random() < 0.7 else self.pick((*SALES, *SERVICE), case)
            self.fire(case, "feed_back", feeder, {"customer_feedback": rng.choice(FEEDBACK)})
            if round_ == 0 and self.chance(P_DISPUTE):
                yield self.working_days(1, 3)
                disputer = self.pick((clerk, *SALES), case)
                self.fire(case, "dispute", disputer, {"dispute_reason": rng.choice(DISPUTES)})
                self.n.disputes += 1
                self.extend(case)
                round_ += 1
                yield self.working_days(1, 3)
                self.reinvestigate(case, reporter)
                continue
            # 回访: between day 5 and day 7 after the result was fed back (never before day 5;
            # sometimes after day 7: the revisit clock breaches)
            yield office_moment(self.calendar, self.now() + timedelta(days=rng.uniform(5.02, 6.7)))
            satisfied = not self.chance(P_DISSATISFIED[min(round_, 2)])
            visit = self.revisit_data(satisfied)
            visitor = self.pick((clerk, *CLERKS, *SALES), case)
            self.missing(case, "revisit", visitor, visit, "revisit_note")
            self.fire(case, "revisit", visitor, visit)
            if satisfied:
                yield self.office_hours(0.2, 6)  # reported the same day, then archived
                closing = {"archive_location": f"档案室 {rng.choice('ABCD')} 柜 {case.number}"}
                if rng.random() < 0.3:
                    closing["capa"] = "修订作业指导书并对相关岗位进行再培训"
                self.wrong_role(case, "close", self.pick(SERVICE, case), closing)
                self.fire(case, "close", ARCHIVIST if rng.random() < 0.7 else clerk, closing)
                self.n.closed += 1
                return
            yield self.office_hours(0.5, 4)
            self.fire(
                case,
                "reopen",
                rng.choice((clerk, QUALITY_HEAD)),
                {"dispute_reason": "回访不满意: " + str(visit["revisit_note"])},
            )
            self.n.reopens += 1
            self.extend(case)
            round_ += 1
            yield self.working_days(0.5, 2)
            self.reinvestigate(case, reporter)

    def investigate(
        self,
        case: _Case,
        handler: Actor,
        manager: Actor,
        reporter: Actor,
        fields: Mapping[str, Any],
    ) -> Iterator[datetime]:
        """The steps in ``confirmed``, in time order, ending with the investigation report."""
        rng = self.rng
        start = self.now()
        major = case.complaint.severity == "major"
        steps: list[tuple[datetime, int, str]] = []
        contact = self.after(start, 0.2, 2.3)
        steps.append((contact, 0, "contact_customer"))
        if major:
            report_at = self.after(start, 10, 26)  # 3 working days
            team_at = self.after(start, 1, 9)
            steps.append((team_at, 1, "name_special_team"))
            report_at = max(report_at, team_at + timedelta(hours=1))
        else:
            report_at = self.after(start, 8, 44)  # 5 working days
            steps.append((self.after(start, 1, 18), 1, "organise_investigation"))
        if "onsite_visit" in fields.get("customer_demand", ()):
            steps.append((self.after(start, 3, 20), 2, "visit_site"))
        if fields["category"] == "product_quality" and self.chance(P_SAMPLE):
            received = self.after(start, 1, 10)
            steps.append((received, 3, "receive_sample"))
            steps.append((self.after(received, 6, 26), 4, "record_reinspection"))
        last = max(moment for moment, _, _ in steps)
        report_at = max(report_at, last + timedelta(minutes=30))
        # the progress clock runs until the disposal is done, but progress can only be
        # reported while the complaint is still being investigated
        if self.chance(P_PROGRESS_REPORT):
            span = self.calendar.between(start, report_at) / timedelta(hours=1)
            steps.append((self.after(start, 0.5, max(span - 0.5, 0.6)), 5, "report_progress"))
        for moment, _, step in sorted(steps):
            yield moment
            if step == "contact_customer":
                who = handler if self.may(handler, step) else manager
                self.fire(case, step, who, {"contact_note": rng.choice(CONTACTS)})
            elif step == "name_special_team":
                self.wrong_role(case, step, QUALITY_HEAD, {"special_team": "质量部牵头"})
                team = (
                    f"组长: {QA_MANAGER.id}; 成员: {self.pick(QA, case).id}, "
                    f"{self.pick(TECH, case).id}, {self.pick(SERVICE, case).id}"
                )
                self.fire(case, step, rng.choice((GM, CHAIRMAN)), {"special_team": team})
            elif step == "organise_investigation":
                self.fire(case, step, reporter)
            elif step == "visit_site":
                visitor = self.pick((*SALES, *SERVICE), case)
                self.fire(case, step, visitor, {"visit_note": rng.choice(VISITS)})
            elif step == "receive_sample":
                self.fire(case, step, self.pick(QA, case))
            elif step == "record_reinspection":
                result = f"复检 {rng.randint(2, 12)} 件, " + rng.choice(REINSPECTIONS)
                self.fire(case, step, self.pick(QA, case), {"reinspection_result": result})
            else:
                note = rng.choice(PROGRESS)
                self.fire(case, step, rng.choice((case.clerk, CS_MANAGER)), {"progress_note": note})
        yield report_at
        if case.complaint.severity == "major" and not case.complaint.fields.get("special_team"):
            # raised by a breach meanwhile: a major report needs a special team first
            self.fire(case, "name_special_team", GM, {"special_team": f"组长: {QA_MANAGER.id}"})
        self.report(case, reporter, fields)

    def needs_approval(self, case: _Case) -> bool:
        measures = case.complaint.fields.get("disposal_measures") or ()
        return case.complaint.severity == "major" or "compensation" in measures

    def approve(self, case: _Case) -> None:
        self.wrong_role(case, "approve_plan", SERVICE_MANAGER)
        self.fire(case, "approve_plan", GM)
        self.n.approvals += 1
        case.approved = True

    def sign(self, case: _Case) -> None:
        self.wrong_role(case, "sign_reply", case.clerk)
        self.fire(case, "sign_reply", CHAIRMAN)
        self.n.signed_replies += 1
        case.signed = True

    def extend(self, case: _Case) -> None:
        """A disputed or reopened complaint will take longer: the clerk agrees an extension
        of the whole-complaint clock with the customer (at most ``MAX_EXTENSIONS`` times)."""
        if self.n.extensions >= MAX_EXTENSIONS or case.extended:
            return
        running = [
            t
            for t in self.engine.timers(case.number)
            if t.timer == "whole_complaint" and t.status == "running" and not t.breached
        ]
        if not running:
            return
        now = self.now()
        consent = Consent(
            given_by=case.customer,
            given_at=now - timedelta(minutes=self.rng.randint(5, 90)),
            channel="phone",
            reason="客户同意延长处理期限, 以便补充调查",
        )
        self.engine.extend_timer(
            case.number,
            "whole_complaint",
            case.clerk,
            EXTENSION_DAYS,
            consent,
            reason="客户异议, 需重新调查 (提前告知客户并取得同意)",
        )
        case.extended = True
        self.n.extensions += 1

    def department(self, fields: Mapping[str, Any]) -> str:
        departments, weights = ASSIGNMENT[fields["category"]]
        return self.rng.choices(departments, weights)[0]

    def report(self, case: _Case, reporter: Actor, fields: Mapping[str, Any]) -> None:
        rng = self.rng
        if fields["category"] == "product_quality":
            cause = rng.choices(tuple(CAUSES), tuple(w for _, w in CAUSES.values()))[0]
        else:
            cause = "other"
        responsibility = {"customer_misuse": "customer"}.get(
            cause, rng.choices(("company", "shared", "undetermined"), (7, 2, 1))[0]
        )
        report = {
            "root_cause": cause,
            "responsibility": responsibility,
            "investigation_report": f"经现场核查及样品复检 ({rng.randint(2, 12)} 件), "
            f"确认{CAUSES[cause][0]}。",
        }
        self.wrong_role(case, "submit_report", self.pick(SERVICE, case), report)
        self.missing(case, "submit_report", reporter, report, "investigation_report")
        self.fire(case, "submit_report", reporter, report)

    def reinvestigate(self, case: _Case, reporter: Actor) -> None:
        if self.chance(0.5):
            self.fire(
                case,
                "reinvestigate",
                reporter,
                {
                    "investigation_report": "补充调查: 复核客户现场数据, 原结论"
                    + self.rng.choice(("成立", "部分修正"))
                },
            )

    def plan(self, case: _Case, handler: Actor, fields: Mapping[str, Any]) -> bool:
        """Propose a disposal plan; returns whether the GM must approve it."""
        rng = self.rng
        demand = list(fields.get("customer_demand", ()))
        measures = [
            m for m in demand if m in ("repair", "replace", "return", "apology", "compensation")
        ] or ["explanation"]
        if fields["category"] == "product_quality" and rng.random() < 0.3:
            measures.append("technical_improvement")
        data: dict[str, Any] = {
            "disposal_plan": "、".join(MEASURE_TEXT[m] for m in measures),
            "disposal_measures": measures,
        }
        if "compensation" in measures:
            claimed = Decimal(str(fields.get("claimed_amount") or "2000"))
            data["compensation_amount"] = str(
                (claimed * Decimal(rng.choice(("0.3", "0.5", "0.8", "1")))).quantize(Decimal("1"))
            )
        needs_approval = case.complaint.severity == "major" or "compensation" in measures
        four_eyes = needs_approval and self.tempted("four_eyes", P_FOUR_EYES)
        if four_eyes:
            proposer = DEPUTY_GM
        elif rng.random() < 0.7 and self.may(handler, "propose_plan"):
            proposer = handler
        else:
            proposer = self.pick(SERVICE, case)
        self.missing(case, "propose_plan", proposer, data, "disposal_measures")
        self.fire(case, "propose_plan", proposer, data)
        if needs_approval and self.tempted("missing_approval", P_EARLY_RESOLVE):
            self.refuse(
                "missing_approval",
                ApprovalMissing,
                case,
                "resolve",
                self.pick(SERVICE, case),
                {"disposal_result": "已安排处理"},
            )
        if four_eyes:
            self.refuse("four_eyes", SeparationOfDuties, case, "approve_plan", DEPUTY_GM)
        return needs_approval

    def resolve(self, case: _Case) -> None:
        rng = self.rng
        measures = case.complaint.fields.get("disposal_measures") or ()
        if any(m in measures for m in ("repair", "replace", "return")):
            actor = self.pick(SERVICE, case)
        else:
            actor = self.pick((*CLERKS, *QA), case)
        self.fire(case, "resolve", actor, {"disposal_result": rng.choice(RESULTS)})

    def revisit_data(self, satisfied: bool) -> dict[str, Any]:
        rng = self.rng
        if satisfied:
            score = rng.randint(85, 100)
            level = "satisfied" if score >= 90 else "basically_satisfied"
            note = rng.choice(SATISFIED_NOTES)
        else:
            score = rng.randint(40, 84)
            level = "dissatisfied" if score < 70 else "basically_satisfied"
            note = rng.choice(DISSATISFIED_NOTES)
        return {"satisfaction_score": score, "satisfaction": level, "revisit_note": note}

    # -- the run ----------------------------------------------------------------------------

    def arrivals(self, count: int, start: datetime, per_day: float) -> list[datetime]:
        """Arrival times: office-hours traffic plus some evening e-mail and online forms."""
        rng = self.rng
        at = start
        out = []
        for _ in range(count):
            at = after_office_hours(self.calendar, at, rng.expovariate(per_day / WORKDAY_HOURS))
            if rng.random() < P_AFTER_HOURS:  # after hours; registered at the next opening
                out.append(at.replace(hour=rng.randint(18, 22), minute=rng.randrange(60)))
            else:
                out.append(at)
        return out

    def run(self, count: int, progress: Progress | None) -> None:
        # the bulk arrives over a few weeks and mostly runs its course before the horizon;
        # a few arrive in the last days and are caught early in the procedure
        late = min(count - 1, max(1, count // 30))
        arrivals = self.arrivals(count - late, self.now(), max(4.0, count / 20))
        last = max(arrivals)
        horizon = after_office_hours(self.calendar, last, HORIZON_DAYS * WORKDAY_HOURS)
        tail = after_office_hours(self.calendar, last, (HORIZON_DAYS - 2) * WORKDAY_HOURS)
        arrivals += [min(t, horizon) for t in self.arrivals(late, tail, late / 2)]
        start = self.now()
        total_hours = max(1, int((horizon - start) / timedelta(hours=1)))
        queue: list[tuple[datetime, int, Iterator[datetime]]] = []
        for i, moment in enumerate(arrivals):
            heapq.heappush(queue, (moment, i, self.story()))
        tick = count
        reported = -1
        while queue and queue[0][0] <= horizon:
            due, _, story = heapq.heappop(queue)
            self.advance(due)
            try:
                nxt = next(story)
            except StopIteration:
                pass
            else:
                heapq.heappush(queue, (nxt, tick, story))
                tick += 1
            if progress is not None:
                hours = int((self.now() - start) / timedelta(hours=1))
                if hours != reported:
                    reported = hours
                    progress("simulating", min(hours, total_hours), total_hours)
        self.advance(horizon)
        if self.last_tick != self.clock():
            self.tick()
        if progress is not None:
            progress("simulating", total_hours, total_hours)


def run_demo(
    engine: Engine,
    count: int = 300,
    seed: int = 7,
    progress: Progress | None = None,
    *,
    clock: SimulatedClock | None = None,
) -> DemoSummary:
    """Run ``count`` generated complaints through the default procedure with the scheduler
    firing the clocks, then verify deeply.

    ``engine`` must use the default rule file and a ``SimulatedClock`` (pass it as ``clock``
    when the engine was opened with it; it is moved to ``DEMO_START`` if earlier). Use a
    fresh database: the summary describes this run's complaints only.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidInput([FieldProblem("count", "at least 1")], context="demo")
    needed = {
        "record",
        "confirm",
        "name_special_team",
        "submit_report",
        "propose_plan",
        "approve_plan",
        "resolve",
        "sign_reply",
        "feed_back",
        "dispute",
        "revisit",
        "close",
        "reopen",
        "reject",
        "reinvestigate",
        *TIMING_STEPS,
    }
    if not needed <= set(engine.rules.triggers):
        raise InvalidInput([FieldProblem("engine", "run_demo walks the default procedure; "
                                         "the engine has other rules")], context="demo")
    if clock is None:
        found = engine.clock
        if not isinstance(found, SimulatedClock):
            raise InvalidInput([FieldProblem("clock", "run_demo needs an engine opened with a "
                                             "SimulatedClock")], context="demo")
        clock = found
    if clock() > DEMO_START.astimezone(UTC):
        raise InvalidInput([FieldProblem("clock", "the clock is past the demo start "
                                         f"{DEMO_START.isoformat()}")], context="demo")
    clock.set(DEMO_START)
    sim = _Simulation(engine, clock, random.Random(seed))
    unsubscribe = engine.subscribe(sim.observe)
    try:
        sim.run(count, progress)
    finally:
        unsubscribe()
    started, ended = DEMO_START, clock()

    verified = 0

    def verify_progress(step: int) -> None:
        nonlocal verified
        verified += step
        if progress is not None:
            progress("verifying", verified, count)

    report = engine.verify(deep=True, progress=verify_progress)
    states = Counter(case.complaint.state for case in sim.cases)
    severities = Counter(case.complaint.severity for case in sim.cases)
    n = sim.n
    timers = [t.id for t in engine.rules.definition.timers]
    clocks = {
        name: {"warnings": n.warnings[name], "breaches": n.breaches[name]}
        for name in timers
        if n.warnings[name] or n.breaches[name]
    }
    return DemoSummary(
        count=count,
        seed=seed,
        states={s: states[s] for s in engine.rules.states if states[s]},
        severities={s: severities[s] for s in engine.rules.severity_levels if severities[s]},
        refusals_by_check={c: n.by_check[c] for c in GUARD_ORDER if n.by_check[c]},
        refusals_by_kind={k: n.by_kind[k] for k in REFUSAL_KINDS if n.by_kind[k]},
        transitions=n.transitions,
        approvals=n.approvals,
        signed_replies=n.signed_replies,
        disputes=n.disputes,
        reopens=n.reopens,
        closed=n.closed,
        rejected=n.rejected,
        verified_ok=report.ok,
        verified_events=report.events,
        verified_complaints=report.complaints,
        findings=len(report.findings),
        started_at=started,
        ended_at=ended,
        timing_steps={t: n.timing[t] for t in TIMING_STEPS if n.timing[t]},
        clocks=clocks,
        clock_events=dict(sorted(n.clock_events.items())),
        ticks=n.ticks,
        max_lateness=n.max_lateness,
        notifications=engine.outbox.pending(),
        reviews=n.reviews,
        extensions=n.extensions,
        severity_raised=n.severity_raised,
        escalated=n.escalated,
        urgent_after_hours=n.urgent_after_hours,
        verified_deep=True,
    )
