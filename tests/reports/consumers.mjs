// Readers nobody on the project wrote, reading what NeuroPETRIX writes; driven by tests/reports/npm.py.
//   node consumers.mjs seg SEG.dcm PET_DIR   OHIF's SEG loader (@cornerstonejs/adapters) on our SEG
//   node consumers.mjs sr SR.dcm             dcmjs's parse of our SR: groups, measurements, image library
//   node consumers.mjs fhir BUNDLE.json      FHIR R4 invariants evaluated by fhirpath.js
//   node consumers.mjs hl7 ORU.hl7           hl7-standard's parse of our ORU: the OBX segments
// Each prints one JSON document on stdout; an exception exits non-zero with its message on stderr.
import fs from 'node:fs';
import path from 'node:path';
import dcmjs from 'dcmjs';

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;
// The libraries log to the console: keep stdout for the one JSON answer.
console.log = console.info = console.warn = console.debug = console.error;

function readDicom(file) {
  const bytes = fs.readFileSync(file);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return [buffer, DicomMetaDictionary.naturalizeDataset(DicomMessage.readFile(buffer).dict)];
}

const list = v => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const numbers = v => list(v).map(Number);

async function seg(segFile, petDir) {
  const core = await import('@cornerstonejs/core');
  const { adaptersSEG } = await import('@cornerstonejs/adapters');
  const pets = fs.readdirSync(petDir).map(f => readDicom(path.join(petDir, f))[1])
    .filter(p => p.Modality === 'PT').sort((a, b) => a.InstanceNumber - b.InstanceNumber);
  const byId = new Map(pets.map((p, i) => [`neuropetrix:${i}`, p]));
  // What a DICOMweb metadata provider gives OHIF for each PET image.
  core.metaData.addProvider((type, imageId) => {
    const p = byId.get(imageId);
    if (!p) return undefined;
    const iop = numbers(p.ImageOrientationPatient), spacing = numbers(p.PixelSpacing);
    return {
      instance: p,
      generalImageModule: { sopInstanceUID: p.SOPInstanceUID, instanceNumber: p.InstanceNumber },
      generalSeriesModule: { modality: p.Modality, seriesInstanceUID: p.SeriesInstanceUID },
      imagePlaneModule: {
        rows: p.Rows, columns: p.Columns, imagePositionPatient: numbers(p.ImagePositionPatient),
        imageOrientationPatient: iop, rowCosines: iop.slice(0, 3), columnCosines: iop.slice(3),
        pixelSpacing: spacing, rowPixelSpacing: spacing[0], columnPixelSpacing: spacing[1],
        frameOfReferenceUID: p.FrameOfReferenceUID, sliceThickness: Number(p.SliceThickness),
      },
    }[type];
  }, 10000);
  const [buffer, dataset] = readDicom(segFile);
  const out = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
    [...byId.keys()], buffer, { metadataProvider: core.metaData });
  const images = out.labelMapImages.flat();
  const slices = images.map(image => {
    const data = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
    const voxels = [];
    for (let i = 0; i < data.length; i++) if (data[i]) voxels.push([i, data[i]]);
    return voxels;
  });
  const segments = out.segMetadata.data.filter(Boolean).map(s => ({
    number: s.SegmentNumber, label: s.SegmentLabel, tracking_uid: s.TrackingUID,
    color: numbers(s.RecommendedDisplayCIELabValue),
  }));
  return { segmentation_type: dataset.SegmentationType, bits_allocated: dataset.BitsAllocated,
           content_creator: dataset.ContentCreatorName, segments, slices };
}

function code(item) {
  const c = list(item.ConceptNameCodeSequence)[0] || {};
  return c.CodeValue;
}

function sr(srFile) {
  const [, dataset] = readDicom(srFile);
  const root = list(dataset.ContentSequence);
  const library = root.find(item => code(item) === '111028');     // Image Library
  const images = list(library?.ContentSequence).flatMap(group => list(group.ContentSequence))
    .filter(item => item.ValueType === 'IMAGE')
    .map(item => list(item.ReferencedSOPSequence)[0].ReferencedSOPInstanceUID);
  const measurements = root.find(item => code(item) === '126010');  // Imaging Measurements
  const groups = list(measurements?.ContentSequence).map(group => {
    const items = list(group.ContentSequence);
    const tracking = items.find(item => code(item) === '112040');
    return {
      tracking_uid: tracking?.UID,
      measurements: items.filter(item => item.ValueType === 'NUM').map(item => {
        const value = list(item.MeasuredValueSequence)[0];
        const derivation = list(item.ContentSequence).find(mod => code(mod) === '121401');
        return {
          concept: code(item), meaning: list(item.ConceptNameCodeSequence)[0].CodeMeaning,
          derivation: derivation ? list(derivation.ConceptCodeSequence)[0].CodeValue : null,
          value: Number(value.NumericValue),
          unit: list(value.MeasurementUnitsCodeSequence)[0].CodeValue
            ?? list(value.MeasurementUnitsCodeSequence)[0].LongCodeValue,
        };
      }),
    };
  });
  return { image_library: images, groups, timezone: dataset.TimezoneOffsetFromUTC,
           created: `${dataset.InstanceCreationDate}${dataset.InstanceCreationTime}` };
}

// R4 invariants (key, context, expression) of the resources and data types our bundle uses.
const INVARIANTS = [
  ['bdl-3', 'Bundle', "entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or %resource.type = 'history'))"],
  ['bdl-4', 'Bundle', "entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = 'transaction-response' or %resource.type = 'history'))"],
  ['bdl-7', 'Bundle', "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()"],
  ['bdl-5', 'Bundle.entry', 'resource.exists() or request.exists() or response.exists()'],
  ['bdl-8', 'Bundle.entry', "fullUrl.contains('/_history/').not()"],
  ['ele-1', 'Bundle', 'descendants().all(hasValue() or (children().count() > id.count()))'],
  ['dom-2', 'Bundle.entry.resource', 'contained.contained.empty()'],
  ['obs-6', 'Bundle.entry.resource.ofType(Observation)', 'dataAbsentReason.empty() or value.empty()'],
  ['obs-7', 'Bundle.entry.resource.ofType(Observation)', 'value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()'],
  ['qty-3', 'Bundle.entry.resource.ofType(Observation).value.ofType(Quantity)', 'code.empty() or system.exists()'],
  ['att-1', 'Bundle.entry.resource.ofType(DiagnosticReport).presentedForm', 'data.empty() or contentType.exists()'],
  ['pat-1', 'Bundle.entry.resource.ofType(Patient).contact', 'name.exists() or telecom.exists() or address.exists() or organization.exists()'],
  // Every reference inside the transaction resolves to an entry of it.
  ['npx-ref', 'Bundle', "descendants().ofType(Reference).reference.all(%resource.entry.fullUrl contains $this)"],
  // Every Observation has a code of its own: no two share their first coding and focus.
  ['npx-code', 'Bundle', "entry.resource.ofType(Observation).select(code.coding.first().code & '|' & focus.identifier.value).isDistinct()"],
];

async function fhir(file) {
  const fhirpath = (await import('fhirpath')).default;
  const r4 = (await import('fhirpath/fhir-context/r4/index.js')).default;
  const bundle = JSON.parse(fs.readFileSync(file, 'utf8'));
  const failed = {};
  for (const [key, context, expression] of INVARIANTS) {
    const nodes = fhirpath.evaluate(bundle, context, { resource: bundle }, r4);
    const bad = [];
    nodes.forEach((node, k) => {
      const resource = node.resourceType ? node : bundle;
      const [ok] = fhirpath.evaluate(node, expression, { resource, rootResource: bundle }, r4);
      if (ok !== true) bad.push(k);
    });
    if (bad.length) failed[key] = bad;
  }
  return { checked: INVARIANTS.map(([key]) => key), failed };
}

async function hl7(file) {
  const HL7 = (await import('hl7-standard')).default;
  const raw = fs.readFileSync(file);
  const charset = raw.subarray(0, raw.indexOf(13)).toString('latin1').split('|')[17];
  const text = new TextDecoder(charset === '8859/9' ? 'iso-8859-9' : 'utf-8').decode(raw);
  const message = new HL7(text, { lineEndings: '\r' });
  message.transform();
  const value = (segment, field) => {
    const v = segment.get(field);
    return typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v);
  };
  return {
    charset,
    obx: message.getSegments('OBX').map(s => ({
      id: value(s, 'OBX.3.1'), system: value(s, 'OBX.3.3'), sub_id: value(s, 'OBX.4'),
      type: value(s, 'OBX.2'), value: value(s, 'OBX.5'), method: value(s, 'OBX.17.1'),
    })),
  };
}

const [command, ...args] = process.argv.slice(2);
const commands = { seg, sr, fhir, hl7 };
if (!commands[command]) {
  console.error(`unknown command ${command}; one of ${Object.keys(commands).join(', ')}`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(await commands[command](...args)));
