//! Synthetic personal data: names, ID numbers and phones that look real and are not.

use super::rng::Rng;

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "罗", "高",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明", "超",
    "秀", "霞", "平", "刚", "桂", "英", "华", "玉", "建", "文", "婷", "宇", "晨", "欣",
];
const AREA_CODES: &[&str] = &[
    "310101", "110105", "440305", "330106", "510104", "420102", "610113", "210102", "320102",
    "500103",
];

pub fn name(rng: &mut Rng) -> String {
    let mut s = String::from(*rng.pick(SURNAMES));
    s.push_str(rng.pick::<&str>(GIVEN));
    if rng.chance(0.6) {
        s.push_str(rng.pick::<&str>(GIVEN));
    }
    s
}

/// An 18-character resident ID with a valid ISO 7064 MOD 11-2 check character.
pub fn id_number(rng: &mut Rng) -> String {
    let year = rng.range(1950, 2004);
    let month = rng.range(1, 12);
    let day = rng.range(1, 28);
    let seq = rng.range(1, 999);
    let body = format!(
        "{}{year:04}{month:02}{day:02}{seq:03}",
        rng.pick(AREA_CODES)
    );
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let sum: u32 = body
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, w)| (b - b'0') as u32 * w)
        .sum();
    format!("{body}{}", CHECK[(sum % 11) as usize] as char)
}

pub fn phone(rng: &mut Rng) -> String {
    let prefix = rng.pick(&["13", "15", "18", "17", "19"]);
    format!("{prefix}{:09}", rng.range(0, 999_999_999))
}
