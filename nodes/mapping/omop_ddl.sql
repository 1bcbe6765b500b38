-- A subset of the OMOP CDM 5.4 DDL: the tables and columns nodes/mapping/omop.py reads.
-- Column names and types follow the official CDM 5.4 DDL (OHDSI CommonDataModel); columns
-- Varde never reads are left out. Portable: runs on SQLite and PostgreSQL as it is.
-- {schema} is replaced by "name." (or nothing) by the code that runs it.

CREATE TABLE {schema}concept (
    concept_id INTEGER NOT NULL PRIMARY KEY,
    concept_name VARCHAR(255) NOT NULL,
    domain_id VARCHAR(20) NOT NULL,
    vocabulary_id VARCHAR(20) NOT NULL,
    concept_class_id VARCHAR(20) NOT NULL,
    standard_concept VARCHAR(1) NULL,
    concept_code VARCHAR(50) NOT NULL,
    valid_start_date DATE NOT NULL,
    valid_end_date DATE NOT NULL,
    invalid_reason VARCHAR(1) NULL
);

CREATE TABLE {schema}person (
    person_id INTEGER NOT NULL PRIMARY KEY,
    gender_concept_id INTEGER NOT NULL,
    year_of_birth INTEGER NOT NULL,
    month_of_birth INTEGER NULL,
    day_of_birth INTEGER NULL,
    birth_datetime TIMESTAMP NULL,
    race_concept_id INTEGER NOT NULL,
    ethnicity_concept_id INTEGER NOT NULL,
    location_id INTEGER NULL,
    person_source_value VARCHAR(50) NULL,
    gender_source_value VARCHAR(50) NULL
);

CREATE TABLE {schema}observation_period (
    observation_period_id INTEGER NOT NULL PRIMARY KEY,
    person_id INTEGER NOT NULL,
    observation_period_start_date DATE NOT NULL,
    observation_period_end_date DATE NOT NULL,
    period_type_concept_id INTEGER NOT NULL
);

CREATE TABLE {schema}condition_occurrence (
    condition_occurrence_id INTEGER NOT NULL PRIMARY KEY,
    person_id INTEGER NOT NULL,
    condition_concept_id INTEGER NOT NULL,
    condition_start_date DATE NOT NULL,
    condition_start_datetime TIMESTAMP NULL,
    condition_end_date DATE NULL,
    condition_type_concept_id INTEGER NOT NULL,
    condition_status_concept_id INTEGER NULL,
    condition_source_value VARCHAR(50) NULL,
    condition_source_concept_id INTEGER NULL
);

CREATE TABLE {schema}measurement (
    measurement_id INTEGER NOT NULL PRIMARY KEY,
    person_id INTEGER NOT NULL,
    measurement_concept_id INTEGER NOT NULL,
    measurement_date DATE NOT NULL,
    measurement_type_concept_id INTEGER NOT NULL,
    value_as_number NUMERIC NULL,
    value_as_concept_id INTEGER NULL,
    measurement_source_value VARCHAR(50) NULL
);

CREATE TABLE {schema}observation (
    observation_id INTEGER NOT NULL PRIMARY KEY,
    person_id INTEGER NOT NULL,
    observation_concept_id INTEGER NOT NULL,
    observation_date DATE NOT NULL,
    observation_type_concept_id INTEGER NOT NULL,
    value_as_number NUMERIC NULL,
    value_as_string VARCHAR(60) NULL,
    value_as_concept_id INTEGER NULL,
    observation_source_value VARCHAR(50) NULL
);

CREATE TABLE {schema}death (
    person_id INTEGER NOT NULL PRIMARY KEY,
    death_date DATE NOT NULL,
    death_datetime TIMESTAMP NULL,
    death_type_concept_id INTEGER NULL,
    cause_concept_id INTEGER NULL
);
