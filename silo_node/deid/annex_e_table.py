"""PS3.15 Annex E, Table E.1-1: the Basic Application Level Confidentiality Profile.

Each attribute the profile touches, by its action code in the Basic Profile column:
  D  replace with a non-zero-length dummy value      Z  replace with zero length
  X  remove                                          U  replace UID (consistently)
  Z/D, X/Z, X/D, X/Z/D, X/Z/U*  the profile's "whichever keeps the IOD valid" choices.
Attributes are named by pydicom keyword; the few newer than pydicom 2.4's dictionary by
their tag as 8 hex digits. Table revision 2024b. Repeating-group rows (curve data 50xx,
overlay data and comments 60xx) and private attributes are handled by rule in dicom_deid.

The option columns this silo implements are the keyword sets below: with an option chosen,
those attributes are kept (K), or for modified dates shifted, instead of the Basic action.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

_BASIC: dict[str, str] = {
    "D": """
        AcquisitionFieldOfViewLabel AnnotationGroupLabel AnnotationGroupUID
        AssertionDateTime AttributeModificationDateTime BeamHoldTransitionDateTime
        CertificateOfSigner ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID
        ClinicalTrialSponsorName ClinicalTrialSubjectID ClinicalTrialSubjectReadingID
        ContainerIdentifier ContentSequence ContextGroupLocalVersion ContextGroupVersion
        Date DateTime DecayCorrectionDateTime DestinationAE DeviceLabel
        DigitalSignatureDateTime EffectiveDateTime EncapsulatedDocument EntityLabel
        EntityLongLabel ExclusionStartDateTime FlowIdentifier FlowIdentifierSequence
        FrameAcquisitionDateTime FrameOriginTimestamp FrameReferenceDateTime
        FunctionalSyncPulse GraphicAnnotationSequence HangingProtocolCreationDateTime
        ImpedanceMeasurementDateTime InformationIssueDateTime InterlockDateTime
        InterlockDescription InterlockOriginDescription ModifyingSystem OverrideDateTime
        PersonIdentificationCodeSequence PersonName RTPlanLabel RTPrescriptionLabel
        RTToleranceSetLabel RadiationDoseIdentificationLabel
        RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel
        ReasonForTheAttributeModification RecordedRTControlPointDateTime ReferencedDateTime
        SafePositionExitDate SafePositionExitTime SafePositionReturnDate
        SafePositionReturnTime SelectorAEValue SelectorASValue SelectorDAValue
        SelectorDTValue SelectorLOValue SelectorLTValue SelectorOBValue SelectorPNValue
        SelectorSHValue SelectorSTValue SelectorTMValue SelectorUNValue SelectorURValue
        SelectorUTValue SourceEndDateTime SourceIdentifier SourceStartDateTime
        SourceStrengthReferenceDate SourceStrengthReferenceTime SpecimenIdentifier
        StructureSetLabel Time TreatmentControlPointDate TreatmentControlPointTime
        TreatmentPositionGroupLabel TreatmentToleranceViolationDateTime
        TreatmentToleranceViolationDescription UserContentLabel UserContentLongLabel
        VerificationDateTime VerifyingObserverName VerifyingObserverSequence
        VerifyingOrganization XRayDetectorID XRaySourceID
    """,
    "Z": """
        AccessionNumber CalibrationDateTime ClinicalTrialCoordinatingCenterName
        ClinicalTrialProtocolName ClinicalTrialSiteID ClinicalTrialSiteName
        ClinicalTrialTimePointID ConceptualVolumeCombinationDescription
        ConceptualVolumeDescription ConsultingPhysicianName DeviceAlternateIdentifier
        FillerOrderNumberImagingServiceRequest FractionationNotes
        IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence
        ManufacturerDeviceIdentifier ParticipationDateTime PatientBirthDate PatientName
        PatientSex PlacerOrderNumberImagingServiceRequest PrescriptionNotes
        PrescriptionNotesSequence ROIInterpreter ROIName RTAccessoryDeviceSlotID
        RTAccessoryHolderSlotID RTPhysicianIntentNarrative
        RadiationGenerationModeDescription ReasonForSuperseding ReferringPhysicianName
        ReviewDate ReviewTime SourceOfPreviousValues SpecimenPreparationSequence
        StructureSetDate StructureSetTime StudyDate StudyID StudyTime
        TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
    """,
    "X": """
        00120022 00120023 00120032 00120041 00120043 00120055 00120073 00181204 00181205
        3006002D 3006002E 3006004D 3006004E AcquisitionComments
        AcquisitionProtocolDescription ActualHumanPerformersSequence
        AdditionalPatientHistory AddressTrial AdmissionID AdmittingDate
        AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime
        AffectedSOPInstanceUID Allergies AnnotationGroupDescription ApprovalStatusDateTime
        Arbitrary AssertionExpirationDateTime AuthorObserverSequence BeamDescription
        BolusDescription BranchOfService CalibrationDate CalibrationTime CameraOwnerName
        CassetteID CertifiedTimestamp ClinicalTrialProtocolEthicsCommitteeApprovalNumber
        ClinicalTrialSeriesDescription ClinicalTrialSeriesID
        ClinicalTrialTimePointDescription CommentsOnRadiationDose
        CommentsOnThePerformedProcedureStep CompensatorDescription
        ConfidentialityConstraintOnPatientDataDescription
        ConsultingPhysicianIdentificationSequence ContainerComponentID ContainerDescription
        ContentCreatorIdentificationCodeSequence ContrastBolusStartTime
        ContrastBolusStopTime ContributionDateTime ContributionDescription
        CountryOfResidence CreationDate CreationTime CurrentObserverTrial
        CurrentPatientLocation CurveDate CurveTime CustodialOrganizationSequence
        DataSetTrailingPadding DateOfDocumentOrVerbalTransactionTrial DateOfLastCalibration
        DateOfSecondaryCapture DateTimeOfLastCalibration DecompositionDescription
        DerivationDescription DeviceDescription DeviceSettingDescription
        DigitalSignaturesSequence DischargeDate DischargeDiagnosisDescription DischargeTime
        DisplacementReferenceLabel DistributionAddress DistributionName
        DoseReferenceDescription EntityDescription EntityName
        EquipmentFrameOfReferenceDescription EthicsCommitteeApprovalEffectivenessEndDate
        EthicsCommitteeApprovalEffectivenessStartDate EthnicGroup ExpectedCompletionDateTime
        FilterLookupTableDescription FindingsGroupRecordingDateTrial
        FindingsGroupRecordingTimeTrial FixationDeviceDescription FractionGroupDescription
        FrameComments GPSAltitude GPSAltitudeRef GPSAreaInformation GPSDOP GPSDateStamp
        GPSDestBearing GPSDestBearingRef GPSDestDistance GPSDestDistanceRef GPSDestLatitude
        GPSDestLatitudeRef GPSDestLongitude GPSDestLongitudeRef GPSDifferential
        GPSImgDirection GPSImgDirectionRef GPSLatitude GPSLatitudeRef GPSLongitude
        GPSLongitudeRef GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites
        GPSSpeed GPSSpeedRef GPSStatus GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID
        GantryID GeneratorID HL7DocumentEffectiveTime HumanPerformerName
        HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments
        ImagePresentationComments ImagingServiceRequestComments Impressions
        InstanceCoercionDateTime InstanceOriginStatus InstitutionAddress
        InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence
        InsurancePlanIdentification IntendedFractionStartTime
        IntendedRecipientsOfResultsIdentificationSequence InterpretationApprovalDate
        InterpretationApprovalTime InterpretationApproverSequence InterpretationAuthor
        InterpretationDiagnosisDescription InterpretationID InterpretationIDIssuer
        InterpretationRecordedDate InterpretationRecordedTime InterpretationRecorder
        InterpretationText InterpretationTranscriber InterpretationTranscriptionDate
        InterpretationTranscriptionTime InterventionDrugStartTime InterventionDrugStopTime
        IssueDateOfImagingServiceRequest IssueTimeOfImagingServiceRequest
        IssuerOfAdmissionID IssuerOfAdmissionIDSequence IssuerOfPatientID
        IssuerOfServiceEpisodeID IssuerOfServiceEpisodeIDSequence LastMenstrualDate LensMake
        LensModel LensSerialNumber LensSpecification LongDeviceDescription MAC MakerNote
        MedicalAlerts MedicalRecordLocator MilitaryRank ModifiedAttributesSequence
        ModifiedImageDate ModifiedImageDescription ModifiedImageTime ModifyingDeviceID
        MultienergyAcquisitionDescription NameOfPhysiciansReadingStudy
        NamesOfIntendedRecipientsOfResults NetworkID NonconformingDataElementValue
        NonconformingModifiedAttributesSequence ObservationDateTrial
        ObservationStartDateTime ObservationTimeTrial Occupation OrderCallbackPhoneNumber
        OrderCallbackTelecomInformation OrderEnteredBy OrderEntererLocation
        OriginalAttributesSequence Originator OtherPatientIDs OtherPatientIDsSequence
        OtherPatientNames OverlayDate OverlayTime ParticipantSequence PatientAddress
        PatientAge PatientBirthName PatientBirthTime PatientComments
        PatientInstitutionResidence PatientInsurancePlanCodeSequence PatientMotherBirthName
        PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
        PatientReligiousPreference PatientSetupPhotoDescription PatientSize PatientState
        PatientTelecomInformation PatientTelephoneNumbers PatientTransportArrangements
        PatientTreatmentPreparationMethodDescription
        PatientTreatmentPreparationProcedureParameterDescription PatientWeight
        PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate
        PerformedProcedureStepEndDateTime PerformedProcedureStepEndTime
        PerformedProcedureStepID PerformedProcedureStepStartDate
        PerformedProcedureStepStartDateTime PerformedProcedureStepStartTime
        PerformedStationAETitle PerformedStationGeographicLocationCodeSequence
        PerformedStationName PerformedStationNameCodeSequence
        PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress
        PersonTelecomInformation PersonTelephoneNumbers PhysicianApprovingInterpretation
        PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
        PhysiciansReadingStudyIdentificationSequence PlateID
        PositionAcquisitionTemplateDescription PositionAcquisitionTemplateName PreMedication
        PregnancyStatus PrescriptionDescription PresentationCreationDate
        PresentationCreationTime PriorTreatmentDoseDescription
        ProcedureStepCancellationDateTime ProductExpirationDateTime PyramidDescription
        PyramidLabel ROIDescription ROIGenerationDescription ROIObservationDescription
        ROIObservationLabel RTPlanDescription RTPlanName RadiopharmaceuticalStartDateTime
        RadiopharmaceuticalStartTime RadiopharmaceuticalStopDateTime
        RadiopharmaceuticalStopTime ReasonForOmissionDescription
        ReasonForRequestedProcedureCodeSequence ReasonForStudy
        ReasonForTheImagingServiceRequest ReasonForTheRequestedProcedure ReasonForVisit
        ReasonForVisitCodeSequence ReceivingAE ReferencedDigitalSignatureSequence
        ReferencedPatientAliasSequence ReferencedPatientPhotoSequence
        ReferencedPatientSequence ReferencedSOPInstanceMACSequence ReferringPhysicianAddress
        ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers
        RegionOfResidence RequestAttributesSequence RequestedContrastAgent
        RequestedProcedureComments RequestedProcedureID RequestedProcedureLocation
        RequestedSeriesDescription RequestingAE RequestingPhysician RequestingService
        RespiratoryMotionCompensationTechniqueDescription ResponsibleOrganization
        ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsID
        ResultsIDIssuer RetrieveAETitle SOPAuthorizationDateTime ScheduledAdmissionDate
        ScheduledAdmissionTime ScheduledDischargeDate ScheduledDischargeTime
        ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
        ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
        ScheduledProcedureStepDescription ScheduledProcedureStepEndDate
        ScheduledProcedureStepEndTime ScheduledProcedureStepExpirationDateTime
        ScheduledProcedureStepID ScheduledProcedureStepLocation
        ScheduledProcedureStepModificationDateTime ScheduledProcedureStepStartDate
        ScheduledProcedureStepStartDateTime ScheduledProcedureStepStartTime
        ScheduledStationAETitle ScheduledStationGeographicLocationCodeSequence
        ScheduledStationName ScheduledStationNameCodeSequence ScheduledStudyLocation
        ScheduledStudyLocationAETitle ScheduledStudyStartDate ScheduledStudyStartTime
        ScheduledStudyStopDate ScheduledStudyStopTime SeriesDescription
        ServiceEpisodeDescription ServiceEpisodeID SetupTechniqueDescription
        ShieldingDeviceDescription SlideIdentifier SmokingStatus SourceManufacturer
        SpecialNeeds SpecimenAccessionNumber SpecimenDetailedDescription
        SpecimenShortDescription StationAETitle StructureSetDescription StructureSetName
        StudyArrivalDate StudyArrivalTime StudyComments StudyCompletionDate
        StudyCompletionTime StudyDescription StudyIDIssuer StudyReadDate StudyReadTime
        StudyVerifiedDate StudyVerifiedTime SubstanceAdministrationDateTime
        TelephoneNumberTrial TemplateLocalVersion TemplateVersion TextComments TextString
        TimeOfDocumentCreationOrVerbalTransactionTrial TimeOfLastCalibration
        TimeOfSecondaryCapture TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject
        TopicTitle TransducerIdentificationSequence TreatmentSites UDISequence
        UniqueDeviceIdentifier VerbalSourceIdentifierCodeSequenceTrial VerbalSourceTrial
        VisitComments WaveformFilterDescription XRayDetectorLabel
    """,
    "U": """
        AcquisitionUID ConcatenationUID ConceptualVolumeUID ConstituentConceptualVolumeUID
        DeviceUID DigitalSignatureUID DimensionOrganizationUID DoseReferenceUID
        DosimetricObjectiveUID FailedSOPInstanceUIDList FiducialUID FrameOfReferenceUID
        InstanceCreatorUID IrradiationEventUID LargePaletteColorLookupTableUID
        ManufacturerDeviceClassUID MediaStorageSOPInstanceUID MultiplexGroupUID
        ObservationSubjectUIDTrial ObservationUID PaletteColorLookupTableUID PatientSetupUID
        PresentationDisplayCollectionUID PresentationSequenceCollectionUID PyramidUID
        RTTreatmentPhaseUID ReferencedConceptualVolumeUID ReferencedDoseReferenceUID
        ReferencedDosimetricObjectiveUID ReferencedFiducialsUID
        ReferencedFrameOfReferenceUID
        ReferencedGeneralPurposeScheduledProcedureStepTransactionUID
        ReferencedObservationUIDTrial ReferencedSOPInstanceUID
        ReferencedSOPInstanceUIDInFile ReferencedTreatmentPositionGroupUID
        RelatedFrameOfReferenceUID RequestedSOPInstanceUID SOPInstanceUID SeriesInstanceUID
        SourceConceptualVolumeUID SourceFrameOfReferenceUID SpecimenUID
        StorageMediaFileSetUID StudyInstanceUID SynchronizationFrameOfReferenceUID TargetUID
        TemplateExtensionCreatorUID TemplateExtensionOrganizationUID TrackingUID
        TransactionUID TreatmentPositionGroupUID TreatmentSessionUID UID
    """,
    "Z/D": """
        ContentCreatorName ContentDate ContentTime ContrastBolusAgent
        InstructionPerformedDateTime PatientID
    """,
    "X/Z": """
        AcquisitionContextSequence AcquisitionDate AcquisitionTime BarcodeValue LabelText
        PatientSexNeutered ReferencedStudySequence RequestedProcedureDescription
        ReviewerName SourceSerialNumber TreatmentMachineName
    """,
    "X/D": """
        AcquisitionDeviceProcessingDescription DateOfLastDetectorCalibration DetectorID
        EndAcquisitionDateTime FirstTreatmentDate InstanceCreationDate IntendedPhaseEndDate
        IntendedPhaseStartDate MostRecentTreatmentDate ObservationDateTime
        OperatorIdentificationSequence ProtocolName RTPlanDate RTPlanTime
        RTTreatmentApproachLabel SeriesDate SeriesTime StartAcquisitionDateTime
        TimeOfLastDetectorCalibration TreatmentDate TreatmentSite TreatmentTime
    """,
    "X/Z/D": """
        AcquisitionDateTime DeviceSerialNumber InstanceCreationTime InstitutionCodeSequence
        InstitutionName OperatorsName ReferencedPerformedProcedureStepSequence StationName
    """,
    "X/Z/U*": """
        ReferencedImageSequence SourceImageSequence
    """,
}

# Retain Patient Characteristics Option: the attributes it marks K.
PATIENT_CHARACTERISTICS = frozenset(
    "PatientSex PatientAge PatientSize PatientWeight EthnicGroup SmokingStatus PregnancyStatus "
    "PatientSexNeutered".split()
)
# Retain Device Identity Option.
DEVICE_IDENTITY = frozenset(
    "DeviceSerialNumber StationName DetectorID GantryID GeneratorID PlateID CassetteID DeviceUID "
    "DeviceDescription LongDeviceDescription ModifyingDeviceID SourceSerialNumber "
    "UniqueDeviceIdentifier UDISequence DeviceAlternateIdentifier LensMake LensModel "
    "LensSerialNumber LensSpecification TreatmentMachineName PerformedStationName "
    "ScheduledStationName DeviceLabel".split()
)
# Retain Institution Identity Option.
INSTITUTION_IDENTITY = frozenset(
    "InstitutionName InstitutionAddress InstitutionCodeSequence InstitutionalDepartmentName "
    "InstitutionalDepartmentTypeCodeSequence".split()
)

# Deidentification method codes (CID 7050) recorded in DeidentificationMethodCodeSequence.
METHOD_CODES: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "device_identity": ("113109", "Retain Device Identity Option"),
    "uids": ("113110", "Retain UIDs Option"),
    "longitudinal_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "longitudinal_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "institution_identity": ("113112", "Retain Institution Identity Option"),
}


def _tag(name: str) -> int:
    if len(name) == 8 and all(c in "0123456789ABCDEF" for c in name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise KeyError(f"Annex E table names {name!r}, unknown to this pydicom")
    return int(tag)


BASIC_PROFILE: dict[int, str] = {
    _tag(name): action for action, names in _BASIC.items() for name in names.split()
}
"""Tag -> Basic Profile action for every attribute of Table E.1-1 (outside repeating groups)."""


def tags_of(keywords: frozenset[str]) -> frozenset[int]:
    return frozenset(_tag(k) for k in keywords)
