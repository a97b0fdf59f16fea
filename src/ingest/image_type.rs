//! Image Type (0008,0008) and the rule that decides which received images become jobs.

use std::fmt;

use crate::config::JobSelect;

/// The values of Image Type, upper-cased and trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageType(pub Vec<String>);

impl ImageType {
    pub fn from_values(values: Option<&[String]>) -> ImageType {
        ImageType(
            values
                .unwrap_or_default()
                .iter()
                .map(|v| v.trim().to_ascii_uppercase())
                .collect(),
        )
    }

    fn has(&self, value: &str) -> bool {
        self.0.iter().any(|v| v == value)
    }

    /// The CESM low-energy image (PS3.3 C.8.11.7.1.4: LOW_ENERGY in Image Type).
    pub fn is_low_energy(&self) -> bool {
        self.has("LOW_ENERGY") && !self.is_high_energy_or_recombined()
    }

    /// A high-energy or recombined (subtraction/addition) CESM image: stored, never processed.
    pub fn is_high_energy_or_recombined(&self) -> bool {
        ["HIGH_ENERGY", "SUBTRACTION", "ADDITION", "RECOMBINED"]
            .iter()
            .any(|v| self.has(v))
    }
}

impl fmt::Display for ImageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\\"))
    }
}

/// Whether an instance becomes a job under the configured rule.
pub fn becomes_job(select: JobSelect, sop_class_uid: &str, image_type: &ImageType) -> bool {
    let mammogram =
        sop_class_uid == vcnode_scp::MG_FOR_PRESENTATION || sop_class_uid == vcnode_scp::MG_FOR_PROCESSING;
    if !mammogram || image_type.is_high_energy_or_recombined() {
        return false;
    }
    match select {
        JobSelect::LowEnergy => image_type.is_low_energy(),
        JobSelect::MgPresentation => {
            image_type.is_low_energy() || sop_class_uid == vcnode_scp::MG_FOR_PRESENTATION
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(s: &str) -> ImageType {
        let v: Vec<String> = s.split('\\').map(String::from).collect();
        ImageType::from_values(Some(&v))
    }

    #[test]
    fn low_energy_images_become_jobs_recombined_never() {
        let mg = vcnode_scp::MG_FOR_PRESENTATION;
        assert!(becomes_job(
            JobSelect::LowEnergy,
            mg,
            &it("ORIGINAL\\PRIMARY\\POST_CONTRAST\\\\LOW_ENERGY")
        ));
        assert!(!becomes_job(JobSelect::LowEnergy, mg, &it("ORIGINAL\\PRIMARY")));
        assert!(!becomes_job(
            JobSelect::LowEnergy,
            mg,
            &it("DERIVED\\PRIMARY\\POST_CONTRAST\\SUBTRACTION\\HIGH_ENERGY")
        ));
        assert!(becomes_job(
            JobSelect::MgPresentation,
            mg,
            &it("ORIGINAL\\PRIMARY")
        ));
        assert!(!becomes_job(
            JobSelect::MgPresentation,
            mg,
            &it("DERIVED\\PRIMARY\\POST_CONTRAST\\SUBTRACTION")
        ));
        assert!(!becomes_job(
            JobSelect::MgPresentation,
            "1.2.840.10008.5.1.4.1.1.2",
            &it("ORIGINAL\\PRIMARY\\\\\\LOW_ENERGY")
        ));
    }
}
