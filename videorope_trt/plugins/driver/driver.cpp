// Test driver: calls the VideoRope plugin library exactly as TensorRT would, without libnvinfer.
//
// It dlopens the library, hands it a logger finder, takes the creator from getCreators, creates the plugin from a
// field collection, clones it, asks for output types and shapes (through a small IExprBuilder implementation),
// checks format negotiation, configures it, asks for the workspace, serializes its fields and recreates it as the
// runtime does, attaches it to a context, and (given host data) runs onShapeChange + enqueue on device buffers whose
// output was poisoned first. Python drives it through ctypes (run.py); compile it against the same TensorRT headers
// as the plugin so both see one ABI. The VideoRopeCache protocol is in driver_cache.cpp, compiled into the same
// library.
#include "driver_common.h"

using namespace nvinfer1;
using namespace vrdriver;

namespace
{

// ---- the case, as Python passes it
struct Case
{
    int64_t dims[4]; // x's dims in its layout
    int32_t numAxes;
    int32_t numFreq;
    int32_t dtype; // nvinfer1::DataType value of x
    int32_t interleaved;
    int32_t layout;
    float scale;
};

// Input/output descriptors of one case (runtime dims).
std::vector<PluginTensorDesc> describe(Case const& c)
{
    bool const bhsd = c.layout == 0;
    int64_t const b = c.dims[0], s = c.dims[bhsd ? 2 : 1];
    std::vector<PluginTensorDesc> d(5);
    for (auto& t : d)
    {
        t.format = TensorFormat::kLINEAR;
        t.scale = 1.0F;
    }
    d[0].dims = Dims{4, {c.dims[0], c.dims[1], c.dims[2], c.dims[3]}};
    d[0].type = static_cast<DataType>(c.dtype);
    d[1].dims = Dims{3, {c.numAxes, b, s}};
    d[1].type = DataType::kFLOAT;
    d[2].dims = Dims{1, {c.numFreq}};
    d[2].type = DataType::kFLOAT;
    d[3].dims = Dims{1, {c.numFreq}};
    d[3].type = DataType::kINT32;
    d[4] = d[0];
    return d;
}

// Build phase: types, shapes, formats, configure, workspace. Returns the workspace size.
size_t buildPhase(IPluginV3OneBuild* build, Case const& c, std::vector<PluginTensorDesc> const& desc)
{
    require(build->getNbOutputs() == 1, "getNbOutputs != 1");
    DataType inTypes[4] = {desc[0].type, desc[1].type, desc[2].type, desc[3].type};
    DataType outType = DataType::kINT8;
    require(build->getOutputDataTypes(&outType, 1, inTypes, 4) == 0 && outType == desc[0].type, "output type != x type");

    // Shapes: B and S are symbolic (dynamic at build time), H, D, A, F constants.
    BuilderImpl impl;
    ExprBuilder eb(&impl);
    int const seqAxis = c.layout == 0 ? 2 : 1;
    DimsExprs in[4];
    for (int i = 0; i < 4; ++i)
    {
        in[i].nbDims = desc[i].dims.nbDims;
        for (int j = 0; j < in[i].nbDims; ++j)
        {
            bool const dynamic = (i == 0 && (j == 0 || j == seqAxis)) || (i == 1 && j > 0);
            in[i].d[j] = impl.pool().make(!dynamic, desc[i].dims.d[j]);
        }
    }
    DimsExprs out[1];
    require(build->getOutputShapes(in, 4, nullptr, 0, out, 1, eb) == 0, "getOutputShapes failed");
    require(out[0].nbDims == 4, "output rank != 4");
    for (int j = 0; j < 4; ++j)
    {
        require(out[0].d[j] != nullptr, "output dim expression is null");
        require(static_cast<Expr const*>(out[0].d[j])->value() == desc[0].dims.d[j], "output dim != x dim");
        require(out[0].d[j]->isConstant() == in[0].d[j]->isConstant(), "output dim constness != x's");
    }

    // Formats: the case's own combination is accepted, each wrong type or format is refused.
    DynamicPluginTensorDesc dyn[5];
    for (int i = 0; i < 5; ++i)
    {
        dyn[i].desc = desc[i];
        dyn[i].min = dyn[i].max = dyn[i].opt = desc[i].dims;
    }
    for (int pos = 0; pos < 5; ++pos)
        require(build->supportsFormatCombination(pos, dyn, 4, 1), "refused its own format at pos " + std::to_string(pos));
    DataType const wrong[5] = {DataType::kINT32, DataType::kHALF, DataType::kHALF, DataType::kFLOAT,
        desc[0].type == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT};
    for (int pos = 0; pos < 5; ++pos)
    {
        DynamicPluginTensorDesc bad[5];
        std::memcpy(bad, dyn, sizeof(dyn));
        bad[pos].desc.type = wrong[pos];
        require(!build->supportsFormatCombination(pos, bad, 4, 1), "accepted a wrong type at pos " + std::to_string(pos));
        std::memcpy(bad, dyn, sizeof(dyn));
        bad[pos].desc.format = TensorFormat::kCHW32;
        require(!build->supportsFormatCombination(pos, bad, 4, 1), "accepted a non-linear format");
    }

    // configurePlugin sees -1 for the dynamic dims, as at build time.
    DynamicPluginTensorDesc cfg[5];
    std::memcpy(cfg, dyn, sizeof(dyn));
    for (int i : {0, 4})
        cfg[i].desc.dims.d[0] = cfg[i].desc.dims.d[seqAxis] = -1;
    cfg[1].desc.dims.d[1] = cfg[1].desc.dims.d[2] = -1;
    require(build->configurePlugin(cfg, 4, cfg + 4, 1) == 0, "configurePlugin failed");
    return build->getWorkspaceSize(dyn, 4, dyn + 4, 1);
}

void runtimePhase(IPluginV3OneRuntime* rt, std::vector<PluginTensorDesc> const& desc, size_t workspace,
    void const* const* host, void* yHost)
{
    DeviceBuffers buf;
    std::vector<void const*> in(4);
    for (int i = 0; i < 4; ++i)
    {
        size_t const bytes = volume(desc[i].dims) * elemSize(desc[i].type);
        void* d = buf.alloc(bytes);
        cudaCheck(cudaMemcpy(d, host[i], bytes, cudaMemcpyHostToDevice), "copy input");
        in[i] = d;
    }
    size_t const outBytes = volume(desc[4].dims) * elemSize(desc[4].type);
    void* out = buf.alloc(outBytes);
    cudaCheck(cudaMemset(out, 0xFF, outBytes), "poison output"); // NaN in fp32, fp16 and bf16
    void* ws = workspace ? buf.alloc(workspace) : nullptr;
    cudaStream_t stream = nullptr;
    cudaCheck(cudaStreamCreate(&stream), "cudaStreamCreate");
    require(rt->onShapeChange(desc.data(), 4, desc.data() + 4, 1) == 0, "onShapeChange failed");
    void* outs[1] = {out};
    int32_t const rc = rt->enqueue(desc.data(), desc.data() + 4, in.data(), outs, ws, stream);
    cudaError_t const sync = cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    require(rc == 0, "enqueue failed");
    cudaCheck(sync, "kernel");
    cudaCheck(cudaMemcpy(yHost, out, outBytes, cudaMemcpyDeviceToHost), "copy output");
}

void runCase(char const* libPath, Case const& c, void const* const* host, void* yHost)
{
    Library lib(libPath);
    Finder finder;
    IPluginCreatorV3One* creator = findCreator(lib, finder, "VideoRope");
    PluginField fields[3] = {PluginField("interleaved", &c.interleaved, PluginFieldType::kINT32, 1),
        PluginField("layout", &c.layout, PluginFieldType::kINT32, 1),
        PluginField("scale", &c.scale, PluginFieldType::kFLOAT32, 1)};
    PluginFieldCollection fc{3, fields};
    std::unique_ptr<IPluginV3> first(creator->createPlugin("videorope_node", &fc, TensorRTPhase::kBUILD));
    require(first != nullptr, "createPlugin (build) returned null");
    require(std::string(first->getInterfaceInfo().kind) == "PLUGIN", "plugin interface kind != PLUGIN");
    auto* core = static_cast<IPluginV3OneCore*>(first->getCapabilityInterface(PluginCapabilityType::kCORE));
    require(core != nullptr && std::string(core->getPluginName()) == "VideoRope"
            && std::string(core->getPluginVersion()) == "1" && std::string(core->getPluginNamespace()) == "videorope",
        "core capability names differ from VideoRope/1/videorope");
    std::unique_ptr<IPluginV3> built(first->clone()); // the network holds a clone
    first.reset();
    require(built != nullptr, "clone returned null");
    auto* build = static_cast<IPluginV3OneBuild*>(built->getCapabilityInterface(PluginCapabilityType::kBUILD));
    require(build != nullptr, "no build capability");
    std::vector<PluginTensorDesc> const desc = describe(c);
    size_t const workspace = buildPhase(build, c, desc);

    // Serialize the fields, then recreate as engine deserialization does.
    auto* rtBuilt = static_cast<IPluginV3OneRuntime*>(built->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    require(rtBuilt != nullptr, "no runtime capability");
    FieldCopy const saved(rtBuilt->getFieldsToSerialize());
    built.reset();
    std::unique_ptr<IPluginV3> loaded(creator->createPlugin("videorope_node", &saved.fc, TensorRTPhase::kRUNTIME));
    require(loaded != nullptr, "createPlugin (runtime) from serialized fields returned null");
    auto* rtLoaded = static_cast<IPluginV3OneRuntime*>(loaded->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    ResourceContext ctx;
    std::unique_ptr<IPluginV3> attached(rtLoaded->attachToContext(&ctx));
    require(attached != nullptr, "attachToContext returned null");
    loaded.reset();
    if (host == nullptr)
        return; // build-time protocol only: no GPU needed
    auto* rt = static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    runtimePhase(rt, desc, workspace, host, yHost);
}

} // namespace

// Runs one case. `host` holds x, positions, inv_freq, axis_map (or is NULL for the build-time protocol only);
// `y` receives the output. Returns 0, or 1 with the reason in `msg`.
extern "C" int vr_driver_run(char const* lib, Case const* c, void const* const* host, void* y, char* msg, int len)
{
    gLog.clear();
    try
    {
        runCase(lib, *c, host, y);
        return gLog.empty() ? 0 : fail("the plugin logged errors", msg, len);
    }
    catch (std::exception const& e)
    {
        return fail(e.what(), msg, len);
    }
}

// The declared fields of creator `name` as "name:TYPE,..." (TYPE a PluginFieldType name), for the contract tests.
extern "C" int vr_driver_creator_fields(char const* lib, char const* name, char* out, int len)
{
    try
    {
        Library l(lib);
        Finder finder;
        PluginFieldCollection const* fc = findCreator(l, finder, name)->getFieldNames();
        std::string s;
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginFieldType const t = fc->fields[i].type;
            s += std::string(i ? "," : "") + fc->fields[i].name + ":"
                + (t == PluginFieldType::kINT32 ? "INT32" : t == PluginFieldType::kFLOAT32 ? "FLOAT32" : "OTHER");
        }
        std::strncpy(out, s.c_str(), static_cast<size_t>(len) - 1);
        out[len - 1] = '\0';
        return 0;
    }
    catch (std::exception const& e)
    {
        return fail(e.what(), out, len);
    }
}

// VideoRope's declared fields (vr_driver_creator_fields for "VideoRope").
extern "C" int vr_driver_fields(char const* lib, char* out, int len)
{
    return vr_driver_creator_fields(lib, "VideoRope", out, len);
}
