//! The bank's organisation: regions > branches > teams > relationship managers. Branch sizes are
//! skewed like a real network (a few big city branches, many small ones).

use super::rng::Rng;

/// (region, [(branch, relative size)])
const NETWORK: &[(&str, &[(&str, f64)])] = &[
    (
        "华东",
        &[
            ("上海分行", 10.0),
            ("杭州分行", 6.0),
            ("南京分行", 5.0),
            ("苏州分行", 4.0),
            ("宁波分行", 2.5),
        ],
    ),
    (
        "华北",
        &[("北京分行", 9.0), ("天津分行", 3.5), ("石家庄分行", 2.0)],
    ),
    (
        "华南",
        &[("深圳分行", 8.0), ("广州分行", 7.0), ("厦门分行", 2.0)],
    ),
    (
        "华中",
        &[("武汉分行", 4.5), ("长沙分行", 3.0), ("郑州分行", 3.0)],
    ),
    (
        "西南",
        &[("成都分行", 5.0), ("重庆分行", 4.0), ("昆明分行", 1.8)],
    ),
    (
        "西北",
        &[("西安分行", 3.5), ("兰州分行", 1.2), ("乌鲁木齐分行", 1.0)],
    ),
    (
        "东北",
        &[("沈阳分行", 2.5), ("大连分行", 2.0), ("哈尔滨分行", 1.5)],
    ),
];

/// Branches whose overdue ratio climbs through the history (the story the risk dashboard tells).
pub const RISING_OVERDUE: &[&str] = &["兰州分行", "昆明分行", "沈阳分行"];

const TEAM_NUMBERS: &[&str] = &["一", "二", "三", "四", "五", "六"];

pub struct Rm {
    pub id: String,
    pub name: String,
    pub team: String,
    pub branch_index: usize,
}

pub struct Branch {
    pub name: &'static str,
    pub region: &'static str,
    pub weight: f64,
    /// Indexes into `Org::rms`.
    pub rms: Vec<usize>,
    pub rising_overdue: bool,
}

pub struct Org {
    pub branches: Vec<Branch>,
    pub rms: Vec<Rm>,
    weights: Vec<f64>,
}

impl Org {
    pub fn build(seed: u64) -> Self {
        let mut rng = Rng::for_entity(seed, 1, 0);
        let mut branches = Vec::new();
        let mut rms = Vec::new();
        for (region, list) in NETWORK {
            for (name, weight) in *list {
                let branch_index = branches.len();
                let teams = (2.0 + weight / 2.5).round() as usize;
                let mut branch_rms = Vec::new();
                for team_no in TEAM_NUMBERS.iter().take(teams.min(TEAM_NUMBERS.len())) {
                    let team = format!("{}{}组", name.trim_end_matches("分行"), team_no);
                    for _ in 0..rng.range(3, 6) {
                        branch_rms.push(rms.len());
                        rms.push(Rm {
                            id: format!("RM{:04}", rms.len() + 1),
                            name: super::people::name(&mut rng),
                            team: team.clone(),
                            branch_index,
                        });
                    }
                }
                branches.push(Branch {
                    name,
                    region,
                    weight: *weight,
                    rms: branch_rms,
                    rising_overdue: RISING_OVERDUE.contains(name),
                });
            }
        }
        let weights = branches.iter().map(|b| b.weight).collect();
        Self {
            branches,
            rms,
            weights,
        }
    }

    /// A relationship manager for a new customer: branch by size, then any RM of it.
    pub fn assign_rm(&self, rng: &mut Rng) -> usize {
        let branch = &self.branches[rng.weighted(&self.weights)];
        *rng.pick(&branch.rms)
    }
}
