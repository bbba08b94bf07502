// What the plugin test drivers share (driver.cpp: VideoRope, driver_cache.cpp: VideoRopeCache): failures, the
// logger TensorRT would hand the library, a small IExprBuilder implementation, dlopen of the library, creator lookup,
// field serialization as the runtime does it, and device buffers.
#pragma once

#include <NvInferRuntime.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace vrdriver
{

using namespace nvinfer1;

struct Failure : std::runtime_error
{
    using std::runtime_error::runtime_error;
};

inline void require(bool ok, std::string const& what)
{
    if (!ok)
        throw Failure(what);
}

inline void cudaCheck(cudaError_t err, char const* what)
{
    require(err == cudaSuccess, std::string(what) + ": " + cudaGetErrorString(err));
}

// ---- logging: what the plugin reports goes into the failure message
inline std::string gLog;

class Logger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
            gLog += std::string(msg) + "\n";
    }
};

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() override { return &mLogger; }

private:
    Logger mLogger;
};

// ---- a small expression implementation: every expression knows its runtime value; `constant` says if TensorRT
// would know it at build time.
class ExprImpl : public apiv::VDimensionExpr
{
public:
    ExprImpl(bool constant, int64_t value)
        : mConstant(constant), mValue(value) {}
    bool isConstant() const override { return mConstant; }
    int64_t getConstantValue() const override { return mConstant ? mValue : -1; }
    bool isSizeTensor() const override { return false; }
    int64_t value() const { return mValue; }

private:
    bool mConstant;
    int64_t mValue;
};

class Expr : public IDimensionExpr
{
public:
    explicit Expr(ExprImpl* impl) { mImpl = impl; }
    ~Expr() noexcept override = default;
    int64_t value() const { return static_cast<ExprImpl*>(mImpl)->value(); }
};

class ExprPool
{
public:
    Expr const* make(bool constant, int64_t value)
    {
        mImpls.push_back(std::make_unique<ExprImpl>(constant, value));
        mExprs.push_back(std::make_unique<Expr>(mImpls.back().get()));
        return mExprs.back().get();
    }

private:
    std::vector<std::unique_ptr<ExprImpl>> mImpls;
    std::vector<std::unique_ptr<Expr>> mExprs;
};

inline int64_t apply(DimensionOperation op, int64_t a, int64_t b)
{
    switch (op)
    {
    case DimensionOperation::kSUM: return a + b;
    case DimensionOperation::kPROD: return a * b;
    case DimensionOperation::kMAX: return a > b ? a : b;
    case DimensionOperation::kMIN: return a < b ? a : b;
    case DimensionOperation::kSUB: return a - b;
    case DimensionOperation::kEQUAL: return a == b;
    case DimensionOperation::kLESS: return a < b;
    case DimensionOperation::kFLOOR_DIV: return b ? (a / b - ((a % b != 0) && ((a < 0) != (b < 0)))) : 0;
    case DimensionOperation::kCEIL_DIV: return b ? (a + b - 1) / b : 0;
    }
    return 0;
}

class BuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override { return mPool.make(true, value); }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        int64_t const v = apply(op, static_cast<Expr const&>(a).value(), static_cast<Expr const&>(b).value());
        return mPool.make(a.isConstant() && b.isConstant(), v);
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr; // VideoRope has no data-dependent output shapes
    }
    ExprPool& pool() { return mPool; }

private:
    ExprPool mPool;
};

class ExprBuilder : public IExprBuilder
{
public:
    explicit ExprBuilder(BuilderImpl* impl) { mImpl = impl; }
    ~ExprBuilder() noexcept override = default;
};

class ResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};


// The library stays loaded for the life of the process, as in TensorRT (and its static CUDA runtime initializes once).
struct Library
{
    void* handle{nullptr};
    explicit Library(char const* path)
    {
        static std::map<std::string, void*> opened;
        void*& h = opened[path];
        if (h == nullptr)
            h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr)
        {
            char const* err = dlerror();
            throw Failure(std::string("dlopen failed: ") + (err ? err : path));
        }
        handle = h;
    }
    template <typename F>
    F symbol(char const* name)
    {
        auto f = reinterpret_cast<F>(dlsym(handle, name));
        require(f != nullptr, std::string("the library does not export ") + name);
        return f;
    }
};

using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinder = void (*)(ILoggerFinder*);

// The library's V3 creator `name`/1/videorope, after handing the library `finder`.
inline IPluginCreatorV3One* findCreator(Library& lib, Finder& finder, std::string const& name)
{
    lib.symbol<SetLoggerFinder>("setLoggerFinder")(&finder);
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = lib.symbol<GetCreators>("getCreators")(n);
    for (int32_t i = 0; i < n; ++i)
    {
        InterfaceInfo const info = creators[i]->getInterfaceInfo();
        if (std::string(info.kind) != "PLUGIN CREATOR_V3ONE" || info.major != 1)
            continue;
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (c->getPluginName() == name && std::string(c->getPluginVersion()) == "1"
            && std::string(c->getPluginNamespace()) == "videorope")
            return c;
    }
    throw Failure("no V3 creator " + name + "/1/videorope among " + std::to_string(n) + " creators");
}

// What serialization does: copy every field (name and data bytes) out of the plugin's own storage.
struct FieldCopy
{
    std::vector<std::string> names;
    std::vector<std::vector<char>> data;
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};

    explicit FieldCopy(PluginFieldCollection const* src)
    {
        require(src != nullptr, "getFieldsToSerialize returned null");
        for (int32_t i = 0; i < src->nbFields; ++i)
        {
            PluginField const& f = src->fields[i];
            size_t const elem = f.type == PluginFieldType::kCHAR || f.type == PluginFieldType::kINT8 ? 1 : 4;
            require(f.type == PluginFieldType::kINT32 || f.type == PluginFieldType::kFLOAT32, "unexpected field type");
            names.emplace_back(f.name);
            char const* bytes = static_cast<char const*>(f.data);
            data.emplace_back(bytes, bytes + elem * f.length);
        }
        for (size_t i = 0; i < names.size(); ++i)
            fields.emplace_back(names[i].c_str(), data[i].data(), src->fields[i].type, src->fields[i].length);
        fc.nbFields = static_cast<int32_t>(fields.size());
        fc.fields = fields.data();
    }
};

inline size_t elemSize(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kINT32 ? 4 : 2;
}

inline int64_t volume(Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
        v *= d.d[i];
    return v;
}


struct DeviceBuffers
{
    std::vector<void*> ptrs;
    ~DeviceBuffers()
    {
        for (void* p : ptrs)
            cudaFree(p);
    }
    void* alloc(size_t bytes)
    {
        void* p = nullptr;
        cudaCheck(cudaMalloc(&p, bytes < 1 ? 1 : bytes), "cudaMalloc");
        ptrs.push_back(p);
        return p;
    }
};


inline int fail(std::string const& what, char* msg, int len)
{
    std::string const text = what + (gLog.empty() ? "" : "\nplugin log:\n" + gLog);
    if (msg != nullptr && len > 0)
    {
        std::strncpy(msg, text.c_str(), static_cast<size_t>(len) - 1);
        msg[len - 1] = '\0';
    }
    return 1;
}

} // namespace vrdriver
