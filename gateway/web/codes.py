"""Names of the schema's topography and morphology codes, for the page's code search.

Why here: the common schema (:mod:`varde.schema`) defines the public codes; a
clinician searches by name ("lung", "adenocarcinoma"), so the page needs words beside
them. The names are the public ICD-10 chapter II titles (three-character level,
shortened) and ICD-O-3 morphology terms; they are presentation only and never part
of a query.
"""

from __future__ import annotations

from varde.schema import MORPHOLOGY_CODES, TOPOGRAPHY_CODES

TOPOGRAPHY_NAMES: dict[str, str] = {
    "C00": "Lip",
    "C01": "Base of tongue",
    "C02": "Other parts of tongue",
    "C03": "Gum",
    "C04": "Floor of mouth",
    "C05": "Palate",
    "C06": "Other parts of mouth",
    "C07": "Parotid gland",
    "C08": "Other major salivary glands",
    "C09": "Tonsil",
    "C10": "Oropharynx",
    "C11": "Nasopharynx",
    "C12": "Pyriform sinus",
    "C13": "Hypopharynx",
    "C14": "Other lip, oral cavity and pharynx",
    "C15": "Oesophagus",
    "C16": "Stomach",
    "C17": "Small intestine",
    "C18": "Colon",
    "C19": "Rectosigmoid junction",
    "C20": "Rectum",
    "C21": "Anus and anal canal",
    "C22": "Liver and intrahepatic bile ducts",
    "C23": "Gallbladder",
    "C24": "Other parts of biliary tract",
    "C25": "Pancreas",
    "C26": "Other digestive organs",
    "C30": "Nasal cavity and middle ear",
    "C31": "Accessory sinuses",
    "C32": "Larynx",
    "C33": "Trachea",
    "C34": "Bronchus and lung",
    "C37": "Thymus",
    "C38": "Heart, mediastinum and pleura",
    "C39": "Other respiratory and intrathoracic organs",
    "C40": "Bone and cartilage of limbs",
    "C41": "Other bone and articular cartilage",
    "C43": "Melanoma of skin",
    "C44": "Other skin",
    "C45": "Mesothelioma",
    "C46": "Kaposi sarcoma",
    "C47": "Peripheral nerves and autonomic nervous system",
    "C48": "Retroperitoneum and peritoneum",
    "C49": "Other connective and soft tissue",
    "C50": "Breast",
    "C51": "Vulva",
    "C52": "Vagina",
    "C53": "Cervix uteri",
    "C54": "Corpus uteri",
    "C55": "Uterus, part unspecified",
    "C56": "Ovary",
    "C57": "Other female genital organs",
    "C58": "Placenta",
    "C60": "Penis",
    "C61": "Prostate",
    "C62": "Testis",
    "C63": "Other male genital organs",
    "C64": "Kidney, except renal pelvis",
    "C65": "Renal pelvis",
    "C66": "Ureter",
    "C67": "Bladder",
    "C68": "Other urinary organs",
    "C69": "Eye and adnexa",
    "C70": "Meninges",
    "C71": "Brain",
    "C72": "Spinal cord, cranial nerves and other CNS",
    "C73": "Thyroid gland",
    "C74": "Adrenal gland",
    "C75": "Other endocrine glands",
    "C76": "Other and ill-defined sites",
    "C77": "Secondary, lymph nodes",
    "C78": "Secondary, respiratory and digestive organs",
    "C79": "Secondary, other sites",
    "C80": "Primary site unknown",
    "C81": "Hodgkin lymphoma",
    "C82": "Follicular lymphoma",
    "C83": "Non-follicular lymphoma",
    "C84": "Mature T/NK-cell lymphomas",
    "C85": "Other non-Hodgkin lymphoma",
    "C86": "Other T/NK-cell lymphomas",
    "C88": "Immunoproliferative diseases",
    "C90": "Multiple myeloma and plasma cell neoplasms",
    "C91": "Lymphoid leukaemia",
    "C92": "Myeloid leukaemia",
    "C93": "Monocytic leukaemia",
    "C94": "Other leukaemias of specified cell type",
    "C95": "Leukaemia of unspecified cell type",
    "C96": "Other lymphoid and haematopoietic neoplasms",
    "C97": "Multiple independent primaries",
}
"""ICD-10 titles of the three-character codes (a site search matches any code below one)."""

MORPHOLOGY_NAMES: dict[str, str] = {
    "8000/3": "Neoplasm, malignant",
    "8010/3": "Carcinoma NOS",
    "8041/3": "Small cell carcinoma",
    "8046/3": "Non-small cell carcinoma",
    "8070/3": "Squamous cell carcinoma",
    "8120/3": "Transitional cell (urothelial) carcinoma",
    "8140/2": "Adenocarcinoma in situ",
    "8140/3": "Adenocarcinoma NOS",
    "8260/3": "Papillary adenocarcinoma",
    "8312/3": "Renal cell carcinoma",
    "8441/3": "Serous carcinoma",
    "8480/3": "Mucinous adenocarcinoma",
    "8500/2": "Ductal carcinoma in situ",
    "8500/3": "Invasive ductal carcinoma",
    "8520/3": "Lobular carcinoma",
    "8720/3": "Malignant melanoma",
    "9440/3": "Glioblastoma",
    "9680/3": "Diffuse large B-cell lymphoma",
    "9823/3": "Chronic lymphocytic leukaemia",
    "9861/3": "Acute myeloid leukaemia",
}


def topography_groups() -> list[tuple[str, str]]:
    """``(prefix, name)`` for every three-character code some schema code starts with.

    >>> ("C34", "Bronchus and lung") in topography_groups()
    True
    """
    prefixes = sorted({code[:3] for code in TOPOGRAPHY_CODES})
    return [(p, TOPOGRAPHY_NAMES.get(p, "")) for p in prefixes]


def morphology_terms() -> list[tuple[str, str]]:
    """``(code, name)`` for every morphology code of the schema, in its order."""
    return [(code, MORPHOLOGY_NAMES.get(code, "")) for code in MORPHOLOGY_CODES]
